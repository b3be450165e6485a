"""Robustness table: clean vs attacked test AUROC per strategy (Flower simulations).

For each setting "m of N clients malicious" (default 1 of 4 and 2 of 6, IID
partitions) and each strategy (FedAvg, FedMedian, FedTrimmedAvg, Krum), one clean
run and one run per attack (:mod:`dfflab.federated.attacks`); Krum is told f = m and
FedTrimmedAvg cuts ``trim-beta`` so that at least m clients go from each tail. Every
run is an ordinary federated run folder (its ``parent`` is the table's run), so
``dfflab compare`` can draw any of them. The table's run folder holds
``robustness.csv``, ``robustness.md`` and ``summary.json``.

    dfflab federated robustness --preset tiny
    dfflab federated robustness --preset tiny --attacks scale,nan --strategies fedavg,krum
"""

from __future__ import annotations

import copy
import csv
import io
import time

from dfflab.config import set_value
from dfflab.runs import Run, atomic_write_text

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
    from dfflab.federated.run import run_federated

    table_run = Run.create(cfg.results, STAGE, "robustness", cfg.to_dict(),
                           note="clean vs attacked test AUROC per strategy")
    rows, t0 = [], time.time()
    for n, m in settings:
        for strategy in strategies:
            for attack in (None, *attacks):
                c = setting_cfg(cfg, strategy, n, m, attack)
                label = attack or "clean"
                run = run_federated(c, name=f"rob-{strategy}-{label}-{m}of{n}", parent=table_run.name,
                                    progress=False, resume=False)
                s, metrics = run.summary(), run.metrics()
                rows.append({"n": n, "malicious": m if attack else 0, "strategy": strategy, "attack": label,
                             "test_auroc": round(s["test"]["auroc"], 4),
                             "rejected_updates": sum(len(str(r.get("rejected") or "").split(";"))
                                                     for r in metrics if r.get("rejected")),
                             "run": run.name})
                if progress:
                    r = rows[-1]
                    print(f"{m} of {n} {strategy:14s} {label:10s} test AUROC {r['test_auroc']:.4f} "
                          f"({time.time() - t0:.0f} s)", flush=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(table_run.path("robustness.csv"), buf.getvalue())
    md = markdown(rows, attacks, settings)
    atomic_write_text(table_run.path("robustness.md"), md + "\n")
    table_run.write_summary({"rows": rows, "seconds": round(time.time() - t0, 1)})
    if progress:
        print(md)
        print(f"table: {table_run.path('robustness.md')}")
    return table_run


def markdown(rows: list[dict], attacks=ATTACKS, settings=SETTINGS) -> str:
    """One line per strategy: clean and attacked test AUROC for each setting."""
    cols = [(n, m, a) for n, m in settings for a in ("clean", *attacks)]
    head = ["strategy", *[f"{a} {m}/{n}" if a != "clean" else f"clean N={n}" for n, m, a in cols]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        cells = []
        for n, _, a in cols:
            hit = [r for r in rows if r["strategy"] == strategy and r["n"] == n and r["attack"] == a]
            cells.append(f"{hit[0]['test_auroc']:.3f}" if hit else "")
        lines.append("| " + " | ".join([strategy, *cells]) + " |")
    return "\n".join(lines)
