"""The recorded evolution of the GAN recipe: ``dfflab generative evolve --preset quick``.

An experiment, one change per step. Each step is a ``train_gan`` run whose settings are
the **last accepted** run's plus one override, with a note (what changes and why, in
principle) and a reason read from the parent's own curves (its ``metrics.csv``: D's
accuracy, D's logits on train vs held-out reals, FD-SSL over training). A step is
**accepted** only when its KID is lower than its parent's beyond the 95% paired
bootstrap interval of the difference (both scored against the same reference set A
with shared resampling, :func:`~dfflab.generative.metrics.paired_interval`); otherwise
it is kept, marked rejected, and the next step starts again from the parent.

Every step is scored with ``gan.evolve-n`` generated images per class against the same
set A (Inception at 299 px is the slow part on a CPU; KID is unbiased at any n, so a
smaller n only widens its interval, which makes acceptance harder, never easier). The
chain's result, the last accepted run, is then scored again at ``gan.eval-n`` with the
real-vs-real floor (:func:`~dfflab.generative.train.rescore`). The chain's run folder
(name ``evolve``) holds ``summary.json``: every step's change, note, reason, verdict and
scores, the final scores at full n, and the table.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dfflab.config import set_value
from dfflab.generative.metrics import paired_interval
from dfflab.runs import Run


@dataclass(frozen=True)
class Step:
    """One change of the recipe: its overrides, its note and the symptom it answers."""

    name: str
    overrides: dict | Callable[[object], dict]  # the one change (a function of the parent's config)
    note: str
    symptom: Callable[[list[dict]], str] | None = None  # the parent's metrics rows -> the observed reason
    continues: bool = False  # train the parent longer from its last.pt instead of from scratch


def _checks(rows: list[dict], key: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]


def _trend(rows: list[dict], key: str) -> str:
    pts = _checks(rows, key)
    if len(pts) < 2:
        return f"{key}: fewer than two checks"
    return f"{key} {pts[0][1]:.3g} (G step {pts[0][0]}) -> {pts[-1][1]:.3g} (G step {pts[-1][0]})"


def d_overfits(rows: list[dict]) -> str:
    """D's accuracy, its train-vs-held-out logit gap and G's loss over the parent's training."""
    gap = [(s, a - b) for (s, a), (_, b) in zip(_checks(rows, "d_train_real"), _checks(rows, "d_heldout_real"),
                                                 strict=False)]
    third = max(1, len(rows) // 3)
    acc = [float(np.mean([r["d_acc"] for r in part])) for part in (rows[:third], rows[-third:])]
    gl = [float(np.mean([r["g_loss"] for r in part])) for part in (rows[:third], rows[-third:])]
    gap_s = f"{gap[0][1]:+.2f} -> {gap[-1][1]:+.2f}" if len(gap) >= 2 else "n/a"
    return (f"parent's D accuracy {acc[0]:.2f} (first third of training) -> {acc[1]:.2f} (last third), "
            f"G loss {gl[0]:.2f} -> {gl[1]:.2f}, D's mean logit on train minus held-out reals {gap_s}"
            + (": D separates train from held-out reals, it memorizes" if len(gap) >= 2 and gap[-1][1] > gap[0][1]
               else ""))


def g_oscillates(rows: list[dict]) -> str:
    """How much the parent's FD-SSL (or G loss) moves from check to check in its second half."""
    key = "fd_ssl" if _checks(rows, "fd_ssl") else "g_loss"
    pts = [v for _, v in _checks(rows, key)]
    half = pts[len(pts) // 2:]
    if len(half) < 3:
        return f"{key}: too few checks to measure oscillation"
    jumps = np.abs(np.diff(half))
    return (f"parent's {key} moves by {np.mean(jumps):.3g} on average between successive checks in the second "
            f"half of training ({100 * np.mean(jumps) / max(np.mean(half), 1e-12):.0f}% of its level; "
            f"{_trend(rows, key)}): the sampled generator is a moving point, an average of its weights is not")


def still_improving(rows: list[dict]) -> str:
    """Whether the parent's FD-SSL was still falling over the last third of its checks."""
    key = "fd_ssl" if _checks(rows, "fd_ssl") else "g_loss"
    pts = _checks(rows, key)
    tail = pts[-max(2, len(pts) // 3):]
    fell = tail[0][1] - tail[-1][1]
    return (f"parent's {key} {tail[0][1]:.3g} -> {tail[-1][1]:.3g} over its last {len(tail)} checks "
            f"(G steps {tail[0][0]}-{tail[-1][0]})" + (": still falling when training stopped" if fell > 0 else
                                                        ": flat or rising at the end"))


def d_balance(rows: list[dict]) -> str:
    """D's accuracy over the parent's last third (near 0.5: D gives G little to learn from)."""
    third = max(1, len(rows) // 3)
    acc = float(np.mean([r["d_acc"] for r in rows[-third:]]))
    return f"parent's D accuracy over its last third of training {acc:.2f} (0.5 = chance)"


EVOLUTION: list[Step] = [
    Step("baseline", {"gan.diffaug": "none", "gan.sample-ema": False},
         "Starting point: the lean conditional GAN at 32 px (DCGAN nets; spectral norm, projection "
         "discriminator and class-conditional BatchNorm, hinge loss, TTUR 4e-4 / 1e-4 with Adam(0, 0.9); "
         "SNGAN/BigGAN's recipe), without DiffAugment, sampled from the live generator."),
    Step("diffaug", {"gan.diffaug": "color,translation,cutout"},
         "DiffAugment (Zhao et al. 2020): the same random colour, translation and cutout on every real "
         "and fake input of D, in D's and G's steps, so D cannot memorize the ~2,100 train images.",
         d_overfits),
    Step("lr-g", lambda cfg: {"gan.lr-g": 2 * cfg.gan.lr_g},
         "Twice G's learning rate (TTUR 4e-4 / 2e-4 instead of 4e-4 / 1e-4): a short CPU budget has few "
         "G steps, and a D that is far from chance can take a faster G.", d_balance),
    Step("longer", lambda cfg: {"gan.epochs": 4 * cfg.gan.epochs},
         "Train the accepted recipe four times as long (continuing its run from its last checkpoint: "
         "the same as one longer run): GANs train for 10^4-10^5 G steps, this budget has a few thousand.",
         still_improving, continues=True),
    Step("ema", {"gan.sample-ema": True},
         "Sample from the exponential moving average of G's weights (decay 0.999; Karras et al. 2018, "
         "Yazici et al. 2019), with standing BatchNorm statistics recomputed for the averaged weights "
         "(BigGAN). The average never feeds back into training, so this step is the parent's own "
         "training run sampled from its EMA: an exactly paired comparison at no training cost.",
         g_oscillates, continues=True),
]


def _overrides(step: Step, cfg) -> dict:
    return step.overrides(cfg) if callable(step.overrides) else dict(step.overrides)


def step_configs(cfg, steps: list[Step] | None = None) -> list[tuple[Step, object]]:
    """``[(step, config)]`` as if every step were accepted (each on top of the previous one)."""
    out, cur = [], cfg
    for step in EVOLUTION if steps is None else steps:
        cur = with_overrides(cur, _overrides(step, cur))
        out.append((step, cur))
    return out


def with_overrides(cfg, overrides: dict):
    """A copy of ``cfg`` with dotted kebab-case ``overrides`` applied."""
    new = copy.deepcopy(cfg)
    for key, value in overrides.items():
        set_value(new, key, value)
    return new


def _overall(run: Run) -> dict:
    """The headline (Inception) overall score of a run, with its bootstrap replicates."""
    from dfflab.files import read_json

    s = run.summary()
    reps = read_json(run.path("bootstrap.json"))["inception"]["overall"]
    return {"kid": s["kid"], "fid": s["fid"], **reps}


def run_evolution(cfg, *, steps: int | None = None, store=None, progress: bool = True,
                  prefix: str = "evolve") -> Run:
    """Train the chain (resuming any crashed step), decide each step, write the chain's run.

    Args:
        steps: run the first N steps of :data:`EVOLUTION` (default: all).
    """
    from dfflab.data import ensure_store
    from dfflab.generative.features import find_ssl_backbone
    from dfflab.generative.train import STAGE, rescore, train_gan

    store = store if store is not None else ensure_store(cfg, progress=progress)
    cfg = copy.deepcopy(cfg)
    if cfg.gan.ssl_backbone == "auto":  # pin it: a new SSL run mid-chain must not change FD-SSL
        found = find_ssl_backbone(cfg.results)
        cfg.gan.ssl_backbone = str(found) if found is not None else "none"
    plan = EVOLUTION[:steps] if steps else EVOLUTION
    parent, parent_cfg, records = None, cfg, []
    for step in plan:
        overrides = _overrides(step, parent_cfg)
        step_cfg = with_overrides(parent_cfg, overrides)
        reason = step.symptom(parent.metrics()) if (parent is not None and step.symptom) else "the first step"
        n = cfg.gan.evolve_n
        run = train_gan(step_cfg, name=f"{prefix}-{step.name}", parent=parent.name if parent else None,
                        note=f"{step.note} Reason, from the parent's curves: {reason}.", store=store,
                        progress=progress, eval_n=n, init_from=parent if step.continues else None)
        s = run.summary()
        rec = {"step": step.name, "run": run.name, "parent": parent.name if parent else None,
               "change": overrides, "note": step.note, "reason": reason, "g_steps": s["g_steps"],
               "n_eval": s["n_eval"], "n_real": s["n_real"], "fid": s["fid"], "fid_ci": s["fid_ci"],
               "kid": s["kid"], "kid_ci": s["kid_ci"], "fid_floor": s.get("fid_floor"),
               "kid_floor": s.get("kid_floor"), "train_seconds": s["train_seconds_this_run"],
               "eval_seconds": s["eval_seconds"]}
        if parent is None:
            rec |= {"accepted": True, "decision": "the starting point"}
        else:
            d = paired_interval(_overall(parent), _overall(run), "kid")
            rec |= {"kid_delta": d["delta"], "kid_delta_ci": d["delta_ci"], "accepted": d["verdict"] == "lower",
                    "decision": f"KID vs parent {d['delta']:+.4f} [{d['delta_ci'][0]:+.4f}, {d['delta_ci'][1]:+.4f}]: "
                                + {"lower": "lower beyond the 95% interval: accepted"}.get(
                                    d["verdict"], f"{d['verdict']}: rejected")}
        run.update_record(evolution={k: rec[k] for k in ("accepted", "decision", "reason")})
        records.append(rec)
        if progress:
            print(f"{step.name}: {rec['decision']}")
        if rec["accepted"]:
            parent, parent_cfg = run, step_cfg
    final = parent.summary()
    if final["n_eval"] != cfg.gan.eval_n:
        final = rescore(parent, store, cfg.gan.eval_n, progress)
    final_rec = {"run": parent.name, **{k: final.get(k) for k in ("g_steps", "n_eval", "n_real", "fid", "fid_ci",
                                                                   "kid", "kid_ci", "fid_floor", "fid_floor_ci",
                                                                   "kid_floor", "kid_floor_ci", "per_class")}}
    chain = Run.create(cfg.results, STAGE, prefix, cfg.to_dict(), fingerprint=store.fingerprint,
                       note="the evolution chain: one change per step, accepted only when KID improves beyond its CI")
    for r in records:
        chain.log_metrics({k: v for k, v in r.items() if k in ("step", "run", "accepted", "g_steps", "n_eval",
                                                                 "fid", "kid", "kid_delta", "fid_floor")})
    chain.write_summary({"chain": records, "final_run": parent.name, "first_run": records[0]["run"],
                         "final": final_rec, "table": table(records)})
    return chain


def _ci(v: float, ci) -> str:
    return f"{v:.4g} [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else f"{v:.4g}"


def table(records: list[dict]) -> str:
    """Markdown: each step's verdict, KID and FID with intervals and n, the floor, G steps."""
    lines = ["| step | change | verdict | KID vs parent [95% CI] | KID [95% CI] | FID [95% CI] | FID floor | n gen / real per class | G steps |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        change = ", ".join(f"{k}={v}" for k, v in r["change"].items())
        delta = (f"{r['kid_delta']:+.4f} [{r['kid_delta_ci'][0]:+.4f}, {r['kid_delta_ci'][1]:+.4f}]"
                 if "kid_delta" in r else "-")
        verdict = "start" if r["parent"] is None else ("accepted" if r["accepted"] else "rejected")
        floor = f"{r['fid_floor']:.2f}" if r.get("fid_floor") is not None else "-"
        lines.append(f"| {r['step']} | {change} | {verdict} | {delta} | {_ci(r['kid'], r['kid_ci'])} | "
                     f"{_ci(r['fid'], r['fid_ci'])} | {floor} | {r['n_eval']} / {r['n_real']} | {r['g_steps']} |")
    return "\n".join(lines)
