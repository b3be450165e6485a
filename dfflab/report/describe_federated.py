"""The federated setup as it ran: clients, partition, strategy, rounds × local epochs, and what
travels to the server and what stays on a client (counted on the model object)."""

from __future__ import annotations

import ast
import importlib.util
import re

from dfflab.report.cells import table
from dfflab.report.collect import RunInfo, get
from dfflab.report.context import Context


def _doc_of(module: str) -> str:
    """A module's docstring, read from its source (no import: the strategies import Flower)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return ""
    with open(spec.origin) as f:
        return ast.get_docstring(ast.parse(f.read())) or ""


def strategy_text(name: str) -> str:
    """The entry of ``name`` in the strategy table of :mod:`dfflab.federated.strategies`."""
    doc = _doc_of("dfflab.federated.strategies")
    m = re.search(rf"^{re.escape(name)}\s{{2,}}(.*?)(?=^\S+\s{{2,}}\S|^=|\Z)", doc, flags=re.S | re.M)
    return " ".join(m.group(1).split()).replace("``", "`") if m else name


def shared_counts(model_cfg: dict, strategy: str) -> dict:
    """Values of the model's state sent each round and kept on the client (FedBN keeps BatchNorm)."""
    from torch import nn

    from dfflab.config import ModelConfig
    from dfflab.federated.task import bn_keys
    from dfflab.models import build_detector

    model = build_detector(ModelConfig(**model_cfg))
    state = model.state_dict()
    total = sum(v.numel() for v in state.values())
    bn = bn_keys(model)
    n_bn = sum(state[k].numel() for k in bn)
    if strategy == "fedbn":
        layers = len([m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)])
        return {"total": total, "local": n_bn,
                "local_what": f"its own {layers} BatchNorm layers (affine weights and running statistics): it "
                              "does not load the server's average of them"}
    return {"total": total, "local": 0, "local_what": "nothing of the model (it loads the whole global model; its "
                                                      "data and, with `fl.keep-optimizer`, its AdamW state stay)"}


def server_setting(fl: dict) -> str:
    s = fl.get("strategy")
    return {"fedprox": f"μ = {fl.get('proximal_mu')}", "fedavgm": f"server momentum {fl.get('server_momentum')}",
            "fedadam": f"server lr {fl.get('server_lr')}", "fedtrimmedavg": f"trim {fl.get('trim_beta')}",
            "krum": f"f = {fl.get('krum_malicious')}"}.get(s, "–")


def local_steps(r: RunInfo) -> int | None:
    """Sequential optimizer steps of a federated run: the summary's, else metrics.csv's last row."""
    return r.summary.get("steps") or r.last("steps")


def epochs_per_client(r: RunInfo) -> float | None:
    """Epochs each client trained: metrics.csv's ``epochs_per_client``, else rounds run × local epochs."""
    v = r.last("epochs_per_client")
    if v is not None:
        return v
    rounds, local = r.summary.get("rounds_run"), r.summary.get("local_epochs")
    return rounds * local if rounds is not None and local is not None else None


def federated_section(ctx: Context) -> list[str]:
    """Section 1.3: one row per federated run, then what each strategy does and shares."""
    lines = ["### 1.3 Federated setup", ""]
    groups = ctx.groups("federated")
    if not groups:
        return lines + ["No federated run.", ""]
    lines += ["Every client trains the detector of section 1.1 with the same recipe (AdamW, warmup + cosine laid over "
              "all rounds × local epochs, the same loss, augmentation and seeds); the server scores each round's "
              "global model on the centralized baseline's own validation (threshold) and test rows. Flower runs "
              "the rounds (simulation engine unless stated otherwise).", ""]
    rows, strategies = [], {}
    for g in groups:
        r = g[0]
        fl = r.config.get("fl", {})
        t = r.config.get("train", {})
        strategy = r.summary.get("strategy", fl.get("strategy"))
        n = r.summary.get("num_partitions", fl.get("num_partitions"))
        local_batch = fl.get("local_batch_size") or t.get("batch_size")
        part = r.summary.get("partition") or []
        images = "/".join(str(p.get("images")) for p in part) if part else "–"
        if strategy != "local-only":
            strategies.setdefault(strategy, r)
        rows.append([r.name, strategy, server_setting(fl) if strategy != "local-only" else "no server",
                     r.summary.get("partitioning", fl.get("partitioning")), n, images,
                     f"{r.summary.get('rounds_run', fl.get('rounds'))} × {r.summary.get('local_epochs', fl.get('local_epochs'))}",
                     local_batch, "kept" if fl.get("keep_optimizer") else "fresh each round", len(g), r.link])
    lines += table(["run", "strategy", "server setting", "partition", "clients", "training images per client",
                    "rounds × local epochs", "local batch", "client AdamW state", "seeds", "run folder"], rows)
    for name, r in strategies.items():
        model_cfg = r.summary.get("model") or r.config.get("model")
        try:
            counts = shared_counts(model_cfg, name) if model_cfg else None
        except (TypeError, ValueError):  # an older model registry's settings: no counts
            counts = None
        lines.append(f"- **{name}**: {strategy_text(name)}"
                     + (f" Each round a client sends all {counts['total']:,} model values and keeps "
                        f"{counts['local_what']}" + (f" ({counts['local']:,} values)" if counts["local"] else "")
                        + "." if counts else ""))
    if any(g[0].summary.get("strategy") == "local-only" for g in groups):
        lines.append("- **local-only**: each client trains alone on its partition for the same epochs, no "
                     "communication: the lower bound a federation must beat; scored as the mean over clients.")
    lines.append("- **Partitions**: `source` gives each client one generator's fakes and the reals paired with them; "
                 "`iid` a seeded shuffle; `dirichlet` a Dirichlet draw over sources "
                 f"(α {get(groups[0][0].config, 'fl.alpha')}). Each client's share is cut into its own train and "
                 "validation rows by the global split.")
    return lines + [""]
