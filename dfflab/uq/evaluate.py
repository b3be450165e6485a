"""``dfflab uq evaluate RUN``: every uncertainty method on one detector run, before and after.

    dfflab uq evaluate results/runs/<stamp>-centralized-scratch
    dfflab uq evaluate results/runs/<stamp>-ensemble-ens          # deep ensemble run
    dfflab uq evaluate RUN --methods plain,temperature --members RUN2 RUN3

A run folder is a centralized or federated run (``detector.pt``; a federated run's
client models, ``clients/*.pt`` or ``detector_client<p>.pt``, enable
``client-ensemble``), an ensemble run from `dfflab uq ensemble` (member 0 is the single
detector, all members the ensemble), or a ``crossgen`` run (each
leave-one-generator-out child is evaluated). Data, model and split come from the
run's own config.json; ``[uq]`` settings from the command's preset and ``--set``.

Validation rows (the training sources') fit everything that is fitted: the
temperature, each method's p(fake) decision threshold (max balanced accuracy, as in
training) and the abstain threshold for ``uq.coverage``. Test rows are only scored:
ECE/NLL/Brier, AUROC, accuracy, risk-coverage and AURC per uncertainty score, and the
unseen-generator separation when the run held a generator out. ``plain`` is the
"before" of every method ("delta_vs_plain" holds after minus before).

Writes ``uq.json``, ``reliability.png`` and ``risk_coverage.png`` (and ``unseen.png``
for held-out runs) into the run folder, and stores the fitted temperature and abstain
thresholds in the run's ``detector.pt`` (keys ``temperature`` and ``uq``), which
``dfflab detect`` reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torchmetrics.functional.classification import binary_auroc

from dfflab.config import ConfigError, config_from_dict
from dfflab.files import markdown_table as md_table
from dfflab.metrics import binary_metrics, choose_threshold
from dfflab.runs import Run, load_checkpoint, save_checkpoint, write_json
from dfflab.uq import plots
from dfflab.uq.calibration import calibration_scores, reliability_bins
from dfflab.uq.methods import METHODS, MethodResult, Models, Scorer
from dfflab.uq.selective import curve_points, selective_scores, threshold_for_coverage
from dfflab.uq.unseen import held_out_sources, unseen_scores

CALIB_KEYS = ("ece", "nll", "brier")


# -- what to evaluate -------------------------------------------------------------------
def _detector_of(path: Path | str) -> Path:
    """A run folder's ``detector.pt``, or the file itself."""
    p = Path(path)
    if p.is_dir():
        p = p / "detector.pt"
    if not p.is_file():
        raise FileNotFoundError(f"{path}: no detector checkpoint (expected a run folder with detector.pt or a .pt)")
    return p


def client_checkpoints(run_dir: Path) -> list[Path]:
    """A federated run's client models: ``clients/*.pt`` or ``detector_client<p>.pt``, by client id."""
    def key(p: Path):
        digits = "".join(c for c in p.stem if c.isdigit())
        return (int(digits) if digits else -1, p.name)

    return sorted([*run_dir.glob("clients/*.pt"), *run_dir.glob("detector_client*.pt")], key=key)


def find_models(run: Run, members: list[str | Path] = ()) -> Models:
    """The checkpoints of ``run``: its detector, ensemble members and federated clients.

    Without a ``detector.pt`` of its own, an ensemble run's member 0 is the single
    detector, and a run holding only client models (federated local-only) uses client 0.
    """
    own = run.path("detector.pt")
    clients = client_checkpoints(run.dir)
    found: list[Path] = []
    if run.record.get("stage") == "ensemble":
        names = run.summary().get("members") or [r["run"] for r in run.metrics()]
        found = [_detector_of(run.dir.parent / n) for n in names]
        if not found:
            raise FileNotFoundError(f"{run.dir}: ensemble run lists no finished members yet")
    elif not own.is_file() and not clients:
        raise FileNotFoundError(f"{run.dir}: no detector.pt (and not an ensemble run); is training finished?")
    detector = own if own.is_file() else (found or clients)[0]
    extra = [_detector_of(m) for m in members]
    if extra:
        found = [detector, *[p for p in extra if p.resolve() != detector.resolve()]]
    return Models(detector, found, clients)


def eval_rows(store, tcfg) -> dict[str, np.ndarray]:
    """val = training sources' validation rows (all fitting); test = the test sources' rows."""
    rows = {"val": store.select("val", list(tcfg.train_sources)),
            "test": store.select("test", list(tcfg.test_sources))}
    for split, r in rows.items():
        if len(np.unique(store.labels[r])) < 2:
            raise ConfigError(f"the {split} rows of {store.path} need reals and fakes (got {len(r)} rows of one "
                              "class); check train.train-sources / train.test-sources and data.val-frac")
    return rows


# -- scoring one method -------------------------------------------------------------------
def method_report(res: MethodResult, ucfg) -> dict:
    """Val-fitted thresholds, then every test metric of one method's predictions."""
    val, test = res.outputs["val"], res.outputs["test"]
    thr = choose_threshold(val.probs, val.labels)
    abstain = {s: threshold_for_coverage(u, ucfg.coverage) for s, u in val.scores().items()}
    det = binary_metrics(test.probs, test.labels, thr)
    # in float64: binary_metrics' float32 would tie the near-0.5 p(fake) of a large T
    det["auroc"] = float(binary_auroc(test.probs.double(), test.labels.long()))
    correct = ((test.probs > thr).long() == test.labels).double()  # torchmetrics binarizes with >
    selective = {}
    for score, u in test.scores().items():
        selective[score] = {**selective_scores(u, correct, ucfg.coverage), "curve": curve_points(u, correct)}
    calib = calibration_scores(test.probs, test.labels, ucfg.ece_bins)
    return {
        # headline test numbers first (AURC abstaining on predictive entropy), details below
        **calib, "auroc": det["auroc"], "aurc": selective["entropy"]["aurc"],
        "info": res.info, "threshold": thr, "abstain_threshold": abstain,
        "val": calibration_scores(val.probs, val.labels, ucfg.ece_bins),
        "test": {**calib, **{k: det[k] for k in ("auroc", "accuracy", "balanced_accuracy", "n")},
                 **{f"mean_{k}": float(v.mean()) for k, v in test.scores().items()},
                 "selective": selective,
                 "reliability": reliability_bins(test.probs, test.labels, ucfg.ece_bins)},
    }


def _deltas(report: dict) -> None:
    base = report.get("plain")
    if base is None:
        return
    for r in report.values():
        r["delta_vs_plain"] = {k: r["test"][k] - base["test"][k] for k in (*CALIB_KEYS, "auroc")}
        r["delta_vs_plain"]["aurc"] = r["test"]["selective"]["entropy"]["aurc"] - \
            base["test"]["selective"]["entropy"]["aurc"]


# -- the whole evaluation -----------------------------------------------------------------
def evaluate_run(run_dir: Path | str, cfg=None, methods: list[str] | None = None, *,
                 members: list[str | Path] = (), store=None, progress: bool = True,
                 write_checkpoint: bool = True) -> dict:
    """Evaluate every available method on ``run_dir``; write uq.json and plots there.

    Args:
        cfg: the run's config with the ``[uq]`` settings to use (default: the run's own).
        methods: names from :data:`~dfflab.uq.methods.METHODS` (default ``cfg.uq.methods``).
        members: extra run folders / detector files joining the run's detector in ``ensemble``.
        store: the prepared store (default: ``ensure_store(cfg)``).
        write_checkpoint: store the fitted temperature and abstain thresholds in detector.pt.

    Returns:
        The ``uq.json`` content.
    """
    from dfflab.device import resolve_device

    run = Run.open(run_dir)
    if run.record.get("stage") == "crossgen":
        return evaluate_crossgen(run, cfg, methods, store=store, progress=progress,
                                 write_checkpoint=write_checkpoint)
    cfg = cfg or config_from_dict(run.config)
    names = list(methods or cfg.uq.methods)
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown uq method(s) {unknown} (known: {', '.join(METHODS)}; setting uq.methods)")
    models = find_models(run, members)
    if store is None:
        from dfflab.data import ensure_store

        store = ensure_store(cfg, progress=progress)
    fp = run.record.get("dataset_fingerprint")
    if fp and fp != store.fingerprint:
        print(f"dfflab: warning: {run.dir} was trained on dataset {fp}, the store {store.path} is {store.fingerprint}")
    rows = eval_rows(store, cfg.train)
    scorer = Scorer(store, rows, resolve_device(cfg.train.device), batch_size=cfg.uq.batch_size,
                    amp=cfg.train.amp, seed=cfg.train.seed, progress=progress)
    report, skipped, outputs = {}, {}, {}
    for name in names:
        why = METHODS[name].needs(models)
        if why:
            skipped[name] = why
            continue
        res = METHODS[name].fn(models, scorer, cfg.uq)
        outputs[name] = res.outputs["test"]
        report[name] = method_report(res, cfg.uq)
    if not report:
        raise ConfigError(f"no uq method could run on {run.dir}: {skipped}")
    _deltas(report)
    unseen = _unseen(report, outputs, store, cfg)
    uq = {"run": run.name, "stage": run.record.get("stage"), "detector": str(models.detector),
          "members": [str(p) for p in models.members], "clients": [str(p) for p in models.clients],
          "settings": {k: getattr(cfg.uq, k) for k in ("mc_samples", "ece_bins", "coverage")},
          "train_sources": store.resolve_sources(cfg.train.train_sources),
          "test_sources": store.resolve_sources(cfg.train.test_sources),
          "sizes": {k: len(v) for k, v in rows.items()}, "methods": report, "skipped": skipped,
          "unseen": {h: {f"{m}/{score}": v for m, u in per.items() for score, v in u["separation_auroc"].items()}
                     for h, per in unseen.items()},
          "unseen_details": unseen}
    uq["table"] = markdown_table(uq)
    write_json(run.path("uq.json"), uq)
    plots.plot_reliability(report, run.path("reliability.png"))
    plots.plot_risk_coverage(report, run.path("risk_coverage.png"))
    if unseen:
        plots.plot_unseen(unseen, run.path("unseen.png"))
    if write_checkpoint and run.path("detector.pt").is_file():
        store_calibration(run.path("detector.pt"), report, cfg.uq)
    if progress:
        print(uq["table"])
        print(f"wrote {run.path('uq.json')} and plots")
    return uq


def _unseen(report: dict, outputs: dict, store, cfg) -> dict:
    """{held_out: {method: unseen_scores}} for each generator the run never trained on."""
    train_src, test_src = store.resolve_sources(cfg.train.train_sources), store.resolve_sources(cfg.train.test_sources)
    held = held_out_sources(train_src, test_src, store.fake_sources)
    seen = [s for s in train_src if s in test_src]
    if not held or not seen:
        return {}
    return {h: {name: unseen_scores(out, store.source_names, h, seen, threshold=report[name]["threshold"],
                                    coverage=cfg.uq.coverage,
                                    abstain_at=report[name]["abstain_threshold"]["entropy"])
                for name, out in outputs.items()}
            for h in held}


def store_calibration(path: Path, report: dict, ucfg) -> None:
    """Write the fitted temperature and abstain thresholds into a detector checkpoint (atomically)."""
    ckpt = load_checkpoint(path)
    fitted = {"coverage": ucfg.coverage, "mc_samples": ucfg.mc_samples,
              "thresholds": {m: r["threshold"] for m, r in report.items()},
              "abstain": {m: r["abstain_threshold"] for m, r in report.items()}}
    if "temperature" in report:
        ckpt["temperature"] = float(report["temperature"]["info"]["temperature"])
    ckpt["uq"] = fitted
    save_checkpoint(path, ckpt)


def markdown_table(uq: dict) -> str:
    """Before (plain) and after each method: calibration, AUROC, AURC; then unseen separation."""
    cov = uq["settings"]["coverage"]
    rows = []
    for name, r in uq["methods"].items():
        t, sel = r["test"], r["test"]["selective"]
        rows.append([name, t["ece"], t["nll"], t["brier"], t["auroc"], t["balanced_accuracy"], sel["entropy"]["aurc"],
                     sel.get("mutual_info", {}).get("aurc"), sel["entropy"]["acc_at_coverage"]])
    text = (f"uq of {uq['run']} (test, {uq['sizes']['test']} images; fitted on val, {uq['sizes']['val']})\n\n"
            + markdown_table4(["method", "ECE", "NLL", "Brier", "AUROC", "bal. acc", "AURC (entropy)", "AURC (MI)",
                               f"acc @ {cov:.0%} cov"], rows))
    for h, per in uq.get("unseen_details", {}).items():
        text += (f"\nheld-out generator {h}: AUROC of each score separating its fakes from seen fakes; "
                 f"accuracy at {cov:.0%} coverage on reals + {h} fakes\n\n")
        text += markdown_table4(["method", "sep. AUROC entropy", "sep. AUROC MI", "acc held out",
                                 "acc @ cov held out", "acc @ cov seen"],
                                [[name, u["separation_auroc"]["entropy"], u["separation_auroc"].get("mutual_info"),
                                  u["held_out"]["accuracy"], u["held_out"]["acc_at_coverage"],
                                  u["seen"]["acc_at_coverage"]] for name, u in per.items()])
    if uq.get("skipped"):
        text += "\n" + "\n".join(f"skipped {m}: {why}" for m, why in uq["skipped"].items()) + "\n"
    return text.rstrip("\n")


def markdown_table4(header: list[str], rows: list[list]) -> str:
    """:func:`dfflab.files.markdown_table` with four decimals and '-' for a missing value."""
    return md_table(header, rows, cell=lambda v: "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v))


def evaluate_crossgen(run: Run, cfg, methods, *, store=None, progress=True, write_checkpoint=True) -> dict:
    """Evaluate each leave-one-generator-out child of a crossgen run; summary uq.json in the crossgen folder."""
    children = [r["child_run"] for r in run.metrics() if r.get("kind") == "logo" and r.get("child_run")]
    if not children:
        raise FileNotFoundError(f"{run.dir}: crossgen run has no finished leave-one-generator-out jobs")
    per, tables = {}, []
    for child in children:
        child_dir = run.dir.parent / child
        child_cfg = config_from_dict(Run.open(child_dir).config)
        if cfg is not None:
            child_cfg.uq = cfg.uq
        uq = evaluate_run(child_dir, child_cfg, methods, store=store, progress=progress,
                          write_checkpoint=write_checkpoint)
        per[child] = {"unseen": uq["unseen"], "unseen_details": uq["unseen_details"], "calibration": {
            m: {k: r["test"][k] for k in CALIB_KEYS} for m, r in uq["methods"].items()}}
        tables.append(uq["table"])
    out = {"run": run.name, "stage": "crossgen", "children": per, "table": "\n\n".join(tables)}
    write_json(run.path("uq.json"), out)
    return out
