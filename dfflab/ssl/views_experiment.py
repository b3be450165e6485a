"""The views experiment: which SSL views keep the artifacts a deepfake detector needs?

    dfflab ssl compare-views --preset quick    # shift, jitter, patch, crop, imagenet x simclr, byol

Pretrains once per (method, view recipe) with everything else fixed and tabulates kNN
(real/fake, 4-way source) and linear-probe accuracy on val. The result is written to
``views_experiment.md``/``.json`` in a run folder of stage ``ssl-views`` and appended to
that run's note, so the choice of ``ssl.views``' default is on record.
"""

from __future__ import annotations

from dfflab.config import ConfigError, derive
from dfflab.files import atomic_write_text, markdown_table, write_json
from dfflab.runs import find_run
from dfflab.ssl.methods import METHODS
from dfflab.ssl.pretrain import pretrain
from dfflab.ssl.sweep import finish_sweep, open_sweep
from dfflab.ssl.views import make_view

COLUMNS = ("knn_real_fake_bacc_val", "knn_real_fake_auroc_val", "knn_source_acc_val",
           "linear_real_fake_bacc_val", "linear_source_acc_val")


def compare_views(cfg, views: list[str], methods: list[str], *, note: str = "", parent=None,
                  store=None, resume: bool = True, progress: bool = True):
    """Pretrain each (method, views) pair; returns the ``ssl-views`` run with the table."""
    for v in views:
        make_view(v)  # ConfigError naming the known recipes
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ConfigError(f"unknown methods {sorted(unknown)} (known: {', '.join(METHODS)})")
    if store is None:
        from dfflab.data import ensure_store

        store = ensure_store(cfg, progress=progress)
    note = note or (f"Views experiment: {', '.join(views)} for {', '.join(methods)}, judged by kNN "
                    "real/fake balanced accuracy on val (colour jitter, blur and heavy crops may erase "
                    "the artifacts a detector needs).")
    spec = {"views": views, "methods": methods}
    sweep, done = open_sweep(cfg, "ssl-views", "views", spec, fingerprint=store.fingerprint,
                             parent=parent, note=note, resume=resume)
    for method in methods:
        for view in views:
            cell = f"{method}-{view}"
            if cell in done:
                continue
            child_cfg = derive(cfg, {"ssl.method": method, "ssl.views": view})
            child = find_run(cfg.results, "ssl", name=f"views-{cell}", cfg=child_cfg,
                                                fingerprint=store.fingerprint) or pretrain(
                child_cfg, name=f"views-{cell}", parent=sweep.name, store=store, progress=progress,
                note=f"views experiment cell: {method} with {view} views", resume=resume)
            s = child.summary()
            row = {"cell": cell, "method": method, "views": view, "run": child.name,
                   **{c: {**s["knn"], **s["linear"]}[c] for c in COLUMNS},
                   "random_knn_real_fake_bacc": s["random_init"]["knn_real_fake_bacc"],
                   "random_linear_real_fake_bacc": s["random_init"].get("linear_real_fake_bacc"),
                   "seconds": s["seconds"], "cpu_seconds": s["cpu_seconds"]}
            sweep.log_metrics(row)
            done[cell] = row
    return _finish(sweep, [done[f"{m}-{v}"] for m in methods for v in views], note)


HEADER = ["method", "views", "kNN real/fake bal. acc", "kNN real/fake AUROC", "kNN source acc",
          "linear real/fake bal. acc", "linear source acc", "random-init kNN bal. acc",
          "random-init linear bal. acc", "seconds", "CPU seconds", "run"]


def _num(v):
    return "n/a" if v is None else float(v)  # runs made before the random-init probe existed


def _finish(sweep, rows: list[dict], note: str):
    """Write the table, the verdict (best views per method by kNN real/fake) and the note."""
    table = markdown_table(HEADER, [[r["method"], r["views"], *(float(r[c]) for c in COLUMNS),
                                     float(r["random_knn_real_fake_bacc"]),
                                     _num(r.get("random_linear_real_fake_bacc")), r["seconds"],
                                     r["cpu_seconds"], r["run"]] for r in rows])
    best = {}
    for r in rows:
        if r["knn_real_fake_bacc_val"] > best.get(r["method"], {}).get("knn_real_fake_bacc_val", -1):
            best[r["method"]] = r
    verdict = "; ".join(f"{m}: best views {r['views']} (kNN real/fake bal. acc "
                        f"{r['knn_real_fake_bacc_val']:.3f})" for m, r in best.items())
    text = (f"# SSL views experiment\n\nAll on val, after pretraining; chance is 0.5 (real/fake "
            f"balanced) and 0.25 (source).\n\n{table}\nResult: {verdict}.\n")
    atomic_write_text(sweep.path("views_experiment.md"), text)
    write_json(sweep.path("views_experiment.json"), rows)
    sweep.update_record(note=f"{note} Result: {verdict}.")
    finish_sweep(sweep, {"rows": rows, "best": {m: r["views"] for m, r in best.items()}})
    return sweep
