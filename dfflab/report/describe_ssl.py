"""The SSL methods as they were run: heads and loss from the method object, views from the recipe's
own documentation, schedule from each run's resolved ``[ssl]`` settings."""

from __future__ import annotations

import re

from dfflab.report.cells import secs, table
from dfflab.report.collect import RunInfo
from dfflab.report.context import Context


def view_recipe(name: str) -> str:
    """The paragraph that documents view recipe ``name`` in :mod:`dfflab.ssl.views`."""
    from dfflab.ssl import views

    doc = views.__doc__ or ""
    m = re.search(rf"^``{re.escape(name)}``\s+(.*?)(?=^``|\Z)", doc, flags=re.S | re.M)
    if not m:
        return f"`{name}`"
    text = " ".join(m.group(1).split()).replace("``", "`")
    # what the recipe does, not what an experiment found about it (that belongs to the results)
    sentences = re.split(r"(?<=[.:])\s+(?=[A-Z])", text)
    keep = [x for x in sentences if not re.search(r"default|experiment", x)]
    return " ".join(keep or sentences[:1])


def method_facts(r: RunInfo) -> dict:
    """Heads, loss and parameter counts of the SSL method object ``r``'s settings build."""
    from dfflab.models import build_backbone
    from dfflab.ssl.config import SSLConfig
    from dfflab.ssl.methods import build_method

    model, ssl = r.config.get("model", {}), r.config.get("ssl", {})
    known = set(SSLConfig.__dataclass_fields__)
    cfg = SSLConfig(**{k: v for k, v in ssl.items() if k in known})
    method = build_method(cfg.method, build_backbone(model.get("backbone", "resnet-narrow"), model.get("width", 16)),
                          cfg)

    def count(name: str) -> int:
        m = getattr(method, name, None)
        return sum(p.numel() for p in m.parameters()) if m is not None else 0

    heads = [f"projection head {method.backbone.out_dim}→{cfg.proj_hidden}→{cfg.proj_dim} "
             f"({count('projection_head'):,} parameters)"]
    if hasattr(method, "prediction_head"):
        heads.append(f"prediction head {cfg.proj_dim}→{cfg.proj_hidden}→{cfg.proj_dim} "
                     f"({count('prediction_head'):,})")
    if hasattr(method, "backbone_momentum"):
        heads.append(f"a momentum (target) copy of backbone and projection head "
                     f"({count('backbone_momentum') + count('projection_head_momentum'):,}, not trained by gradient; "
                     f"EMA momentum {cfg.momentum} rising to 1 on a cosine schedule)")
    loss = type(method.criterion).__name__
    if hasattr(method.criterion, "temperature"):
        loss += f" (temperature {cfg.temperature})"
    trained = sum(p.numel() for p in method.parameters() if p.requires_grad)
    return {"cfg": cfg, "heads": heads, "loss": loss, "trained": trained,
            "backbone": sum(p.numel() for p in method.backbone.parameters())}


def ssl_section(ctx: Context) -> list[str]:
    """Section 1.2: each SSL run's method, views, heads, loss and schedule."""
    lines = ["### 1.2 Self-supervised pretraining", ""]
    runs = [g[0] for g in ctx.groups("ssl")]
    if not runs:
        return lines + ["No SSL run.", ""]
    lines += ["The detector's backbone is pretrained without labels; its weights then initialise a detector "
              "(section 1.1). Each method below was built from its run's recorded settings:", ""]
    rows = []
    for r in runs:
        try:
            f = method_facts(r)
        except Exception as e:  # a run from an older method set: say so, don't crash the report
            lines += [f"- {r.link}: could not rebuild the method ({e}).", ""]
            continue
        c, s = f["cfg"], r.summary
        lines += [f"**{r.name}** ({r.link}): {c.method} on the `{r.config.get('model', {}).get('backbone')}` backbone "
                  f"({f['backbone']:,} parameters); {'; '.join(f['heads'])}; loss {f['loss']}; "
                  f"{f['trained']:,} parameters trained.", "",
                  f"- Views (`{c.views}`): {view_recipe(c.views)}",
                  f"- Schedule: AdamW, peak learning rate {c.lr}, weight decay {c.weight_decay}, linear warmup over "
                  f"{c.warmup_epochs} epoch(s) then cosine decay, {c.epochs} epochs of batch {c.batch_size} (two views "
                  f"each) over {s.get('images')} training images"
                  + (" (reals only)" if c.reals_only else " (reals and fakes, labels unused)") + ".",
                  f"- Monitor: kNN (k {c.knn_k}, temperature {c.knn_t}) and a logistic-regression probe on frozen "
                  "features, labels used only there.", ""]
        rows.append([r.name, c.method, c.views, c.epochs, c.batch_size, s.get("images"), secs(s.get("seconds"))])
    if len(rows) > 1:
        lines += table(["run", "method", "views", "epochs", "batch", "images", "seconds"], rows)
    return lines
