"""Robustness table: clean vs attacked test AUROC per strategy (Flower simulations).

For each setting "m of N clients malicious" (default 1 of 4 and 2 of 6, IID
partitions) and each strategy (FedAvg, FedMedian, FedTrimmedAvg, Krum), one clean
run and one run per attack (:mod:`dfflab.federated.attacks`); Krum is told f = m and
FedTrimmedAvg cuts ``trim-beta`` so that at least m clients go from each tail. Every
run is an ordinary federated run folder (its ``parent`` is the table's run), so
``dfflab compare`` can draw any of them. The table's run folder holds
``robustness.csv``, ``robustness.md`` and ``summary.json``; :func:`write_table` rebuilds
them from the cells' folders without retraining.

    dfflab federated robustness --preset tiny
    dfflab federated robustness --preset tiny --attacks scale,nan --strategies fedavg,krum
"""

from __future__ import annotations

import copy
import time

from dfflab.config import set_value
from dfflab.files import atomic_write_text, markdown_table, write_csv
from dfflab.runs import Run

STAGE = "federated"
STRATEGIES = ("fedavg", "fedmedian", "fedtrimmedavg", "krum")
ATTACKS = ("label-flip", "scale", "nan")
SETTINGS = ((4, 1), (6, 2))  # (N clients, m malicious)


def setting_cfg(cfg, strategy: str, n: int, m: int, attack: str | None):
    """``cfg`` for one cell: N IID clients, the first m malicious (if ``attack``)."""
    c = copy.deepcopy(cfg)
    for key, value in (("fl.strategy", strategy), ("fl.num-partitions", n), ("fl.partitioning", "iid"),
                       ("fl.krum-malicious", m), ("fl.trim-beta", min(0.49, (m + 0.5) / n)),
                       ("fl.malicious", ",".join(str(i) for i in range(m)) if attack else ""),
                       ("fl.attack", attack or "label-flip"), ("fl.parallel-clients", 0)):
        set_value(c, key, value)
    return c


def robustness(cfg, *, strategies=STRATEGIES, attacks=ATTACKS, settings=SETTINGS,
               progress: bool = True) -> Run:
    """Run every cell and write the table; returns the table's run folder."""
    from dfflab.federated.launcher import Job, flower_session, run_batch

    table_run = Run.create(cfg.results, STAGE, "robustness", cfg.to_dict(),
                           note="clean vs attacked test AUROC per strategy")
    t0 = time.time()
    with flower_session():  # one SuperLink for every cell
        for n, m in settings:  # one Flower run (one batch) per federation size
            cells = [(strategy, attack or "clean", setting_cfg(cfg, strategy, n, m, attack))
                     for strategy in strategies for attack in (None, *attacks)]
            runs = run_batch([Job(c, f"rob-{strategy}-{label}-{m}of{n}", table_run.name) for strategy, label, c in cells],
                             progress=False, resume=False)
            for (strategy, label, _), run in zip(cells, runs, strict=True):
                if progress:
                    print(f"{m} of {n} {strategy:14s} {label:10s} test AUROC "
                          f"{run.summary()['test']['auroc']:.4f} ({time.time() - t0:.0f} s)", flush=True)
    md = write_table(table_run, attacks, settings)
    if progress:
        print(md)
        print(f"table: {table_run.path('robustness.md')}")
    return table_run


def cell_row(run: Run) -> dict:
    """One table row from a finished cell's run folder (its config and summary)."""
    fl, s = run.config["fl"], run.summary()
    return {"n": fl["num_partitions"], "malicious": len(fl["malicious"]), "strategy": fl["strategy"],
            "attack": fl["attack"] if fl["malicious"] else "clean", "test_auroc": round(s["test"]["auroc"], 4),
            "rejected_updates": sum(len(_ids(r.get("rejected"))) for r in run.metrics()),
            "failures": s.get("failures", 0), "run": run.name}


def write_table(table_run: Run, attacks=ATTACKS, settings=SETTINGS) -> str:
    """(Re)build ``robustness.csv``/``.md`` and the summary from the cells' run folders."""
    from dfflab.runs import list_runs

    cells = [r for r in list_runs(table_run.dir.parent.parent, STAGE)
             if r.record.get("parent") == table_run.name and r.finished]
    rows = [cell_row(r) for r in sorted(cells, key=lambda r: r.name)]
    rows.sort(key=lambda r: (r["n"], STRATEGIES.index(r["strategy"]) if r["strategy"] in STRATEGIES else 99))
    write_csv(table_run.path("robustness.csv"), rows)
    md = markdown(rows, attacks, settings)
    atomic_write_text(table_run.path("robustness.md"), md + "\n")
    if not table_run.finished:
        table_run.write_summary({"rows": rows})
    return md


def _ids(value) -> list[str]:
    """Partition ids of a ``metrics.csv`` cell ("0;2", a lone 0 read back as a number, or empty)."""
    text = "" if value is None else str(value)
    return [v for v in text.split(";") if v.strip() not in ("", "nan", "None")]


def markdown(rows: list[dict], attacks=ATTACKS, settings=SETTINGS) -> str:
    """One line per strategy: clean and attacked test AUROC for each setting."""
    cols = [(n, m, a) for n, m in settings for a in ("clean", *attacks)]
    head = ["strategy", *[f"{a} {m}/{n}" if a != "clean" else f"clean N={n}" for n, m, a in cols]]
    body = []
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        cells = []
        for n, _, a in cols:
            hit = [r for r in rows if r["strategy"] == strategy and r["n"] == n and r["attack"] == a]
            cells.append(f"{hit[0]['test_auroc']:.3f}" if hit else "")
        body.append([strategy, *cells])
    return markdown_table(head, body).rstrip("\n")
