"""The recorded evolution of the GAN recipe: ``dfflab generative evolve --preset quick``.

Each step is one ``train_gan`` run whose settings are its parent's plus the overrides
below, recorded with ``parent`` and ``note`` in config.json, so the report can show
how FID moved and why. A chain run folder (name ``evolve``) holds the table.
"""

from __future__ import annotations

import copy

from dfflab.config import set_value
from dfflab.runs import Run

# (name, overrides relative to the previous step, note: what changes and why). The first
# three are the recorded evolution (``DEFAULT_STEPS``); the fourth swaps TTUR for several
# D steps per G step, to measure that alternative (``--steps 4``).
EVOLUTION: list[tuple[str, dict, str]] = [
    ("baseline", {"gan.cond-bn": False, "gan.projection": False, "gan.spectral-norm": False,
                  "gan.loss": "bce", "gan.diffaug": "none", "gan.ema": 0.0, "gan.beta1": 0.5,
                  "gan.beta2": 0.999, "gan.lr-d": 2e-4, "gan.lr-g": 2e-4, "gan.d-steps": 1},
     "plain conditional GAN (Mirza & Osindero 2014 with DCGAN's optimizer): class embedding "
     "concatenated to z, one-hot class maps concatenated to D's input, non-saturating BCE loss, "
     "Adam(0.5, 0.999) at 2e-4 for both nets; no spectral norm, DiffAugment or EMA"),
    ("sn-projection", {"gan.cond-bn": True, "gan.projection": True, "gan.spectral-norm": True,
                       "gan.loss": "hinge", "gan.beta1": 0.0, "gan.beta2": 0.9, "gan.lr-d": 4e-4,
                       "gan.lr-g": 1e-4},
     "SNGAN/SAGAN recipe: spectral norm bounds D's Lipschitz constant so its gradients stay "
     "informative; the class enters D through a projection term and G through class-conditional "
     "BatchNorm instead of concatenation; hinge loss, Adam(0, 0.9). A spectrally normalized D "
     "learns slowly with one step per G step at equal rates (a first try had D at chance for "
     "3 epochs), so TTUR (lr-d 4e-4, lr-g 1e-4; Heusel et al. 2017) comes with it"),
    ("diffaug-ema", {"gan.diffaug": "color,translation,cutout", "gan.ema": 0.999},
     "A few thousand training images are few for a GAN, so D overfits them: DiffAugment (colour, "
     "translation, cutout on real and fake D inputs) regularizes D; an EMA of G's weights "
     "averages out the oscillation of adversarial training for sampling and FID"),
    ("d-steps", {"gan.lr-d": 2e-4, "gan.lr-g": 2e-4, "gan.d-steps": 2},
     "TTUR's alternative (SNGAN's n_dis): equal learning rates and 2 D steps per G step; same "
     "D compute, half the G steps, to measure which way of strengthening D works better here"),
]
DEFAULT_STEPS = 3


def step_configs(cfg, steps: int | None = DEFAULT_STEPS) -> list[tuple[str, object, str]]:
    """``[(name, config, note)]``: each step's overrides applied on top of the previous one."""
    out, cur = [], copy.deepcopy(cfg)
    for name, overrides, note in EVOLUTION[:steps]:
        cur = copy.deepcopy(cur)
        for key, value in overrides.items():
            set_value(cur, key, value)
        out.append((name, cur, note))
    return out


def run_evolution(cfg, *, steps: int | None = DEFAULT_STEPS, store=None, progress: bool = True,
                  prefix: str = "evolve") -> Run:
    """Train the chain (resuming any crashed step) and write the chain's table run."""
    from dfflab.data import ensure_store
    from dfflab.generative.metrics import find_ssl_backbone
    from dfflab.generative.train import STAGE, train_gan

    store = store if store is not None else ensure_store(cfg, progress=progress)
    cfg = copy.deepcopy(cfg)
    if cfg.gan.ssl_backbone == "auto":  # pin it: a new SSL run mid-chain must not change FD-SSL
        found = find_ssl_backbone(cfg.results)
        cfg.gan.ssl_backbone = str(found) if found is not None else "none"
    parent, rows = None, []
    for name, step_cfg, note in step_configs(cfg, steps):
        run = train_gan(step_cfg, name=f"{prefix}-{name}", parent=parent, note=note, store=store,
                        progress=progress)
        s = run.summary()
        rows.append({"step": name, "run": run.name, "parent": parent, "note": note,
                     **{k: v for k, v in s.items() if k.startswith(("fid_", "kid_"))},
                     "train_seconds": s["train_seconds"], "eval_seconds": s["eval_seconds"]})
        parent = run.name
    chain = Run.create(cfg.results, STAGE, prefix, cfg.to_dict(), fingerprint=store.fingerprint,
                       note="table of the evolution chain")
    for r in rows:
        chain.log_metrics({k: v for k, v in r.items() if k != "note"})
    chain.write_summary({"chain": rows, "table": table(rows)})
    return chain


def table(rows: list[dict]) -> str:
    """Markdown: FID/KID (Inception, overall and per class) of each step."""
    classes = sorted({k[len("fid_inception_"):] for r in rows for k in r
                      if k.startswith("fid_inception_") and k != "fid_inception_overall"})
    head = "| step | FID overall | KID overall | " + " | ".join(f"FID {c}" for c in classes)
    ssl = any("fid_ssl_overall" in r for r in rows)
    head += " | FD-SSL overall |" if ssl else " |"
    lines = [head, "|---" * (3 + len(classes) + ssl) + "|"]
    for r in rows:
        cells = [r["step"], f"{r['fid_inception_overall']:.1f}", f"{r['kid_inception_overall']:.4f}"]
        cells += [f"{r[f'fid_inception_{c}']:.1f}" for c in classes]
        if ssl:
            cells.append(f"{r['fid_ssl_overall']:.2f}" if "fid_ssl_overall" in r else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
