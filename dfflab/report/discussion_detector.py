"""Discussion sentences about the detectors: what is significantly better than what, what the
budget cannot support, and where the detector fails. Each sentence is derived from the run
folders and carries the numbers and intervals it rests on."""

from __future__ import annotations

from dfflab.report.cells import ci, interval
from dfflab.report.chains import chain_steps
from dfflab.report.claims import Claims, auroc, compared, overlap
from dfflab.report.collect import RunInfo, fmt, get, read_optional_json
from dfflab.report.context import Context
from dfflab.report.describe_federated import epochs_per_client, local_steps
from dfflab.report.results_federated import SEARCH_CHAIN


def comparisons(ctx: Context) -> list[tuple[list[RunInfo], list[RunInfo], dict]]:
    """Every paired comparison the discussion rests on: each centralized detector and each federated
    run against the centralized baseline, each by-source strategy against FedAvg."""
    base = ctx.baseline()
    out = []
    if base:
        for g in ctx.groups("centralized") + ctx.groups("federated"):
            if g[0].name != base[0].name or g[0].stage != base[0].stage:
                comp = ctx.paired(g, base)
                if comp:
                    out.append((g, base, comp))
    src = ctx.seeds("federated", "fedavg-source") if ctx.find("federated", "fedavg-source") else []
    for g in ctx.groups("federated"):
        if src and g[0].name != src[0].name and g[0].summary.get("partitioning") == "source":
            comp = ctx.paired(g, src)
            if comp:
                out.append((g, src, comp))
    return out


def measurements(ctx: Context, c: Claims) -> None:
    c.section("#### 4.1 What the measurements show")
    base = ctx.baseline()
    if base:
        b = base[0]
        c.say(f"The centralized baseline `{b.name}` reaches test AUROC {auroc(b)} and balanced accuracy "
              f"{ci(b.summary.get('test'), 'balanced_accuracy')} on {fmt(get(b.summary, 'sizes.test'))} test images", b)
    for g, ref, comp in comparisons(ctx):
        a, r = g[0], ref[0]
        budget = ""
        if a.stage == "federated" and r.stage == "centralized":
            budget = budget_words(a, r)
        c.say(f"`{a.name}` ({a.stage}) reaches test AUROC {_side(ctx, comp, 'a')} against `{r.name}`'s "
              f"{_side(ctx, comp, 'b')}{budget}; {compared(comp)}", a, r)
    for g in ctx.groups("federated"):
        fedbn(c, g[0])
        bn_reestimated(c, g[0])
        local_only(c, g[0])
    search(ctx, c)
    label_efficiency(ctx, c)


def budget_words(fed: RunInfo, central: RunInfo) -> str:
    """`` at equal epochs per client (E) and S against S' sequential steps`` (or unequal epochs)."""
    e, s = epochs_per_client(fed), local_steps(fed)
    ce, cs = central.summary.get("epochs_run"), central.summary.get("steps")
    steps = "equal sequential steps" if s == cs else f"{fmt(s)} against {fmt(cs)} sequential steps"
    if e is not None and ce is not None and float(e) == float(ce):
        return f" at equal epochs per client ({fmt(e)}) and {steps}"
    return f" after {fmt(e)} epochs per client against {fmt(ce)} epochs, and {steps}"


def _side(ctx: Context, comp: dict, side: str) -> str:
    """One side of a comparison: the run's AUROC with its interval, or the seed mean."""
    if comp["n_seeds"] == 1:
        r = ctx.folders.get(comp[f"{side}_runs"][0])
        if r is not None:
            return auroc(r)
    return f"{comp[side]:.3f} (mean of {comp['n_seeds']} seeds)"


def fedbn(c: Claims, r: RunInfo) -> None:
    pc = r.summary.get("per_client") or {}
    worst, clients = pc.get("worst") or {}, pc.get("clients") or {}
    if not clients or worst.get("client") is None:
        return
    w = clients.get(str(worst["client"]), {})
    c.say(f"Scored as used, `{r.name}`'s personalised client models reach a mean test AUROC of "
          f"{fmt(get(pc, 'mean.auroc'))}; the worst, client {worst['client']}, reaches {ci(w.get('test'), 'auroc')}"
          + (f" and {fmt(pc.get('mean_own_source_auroc'))} on average on each client's own source"
             if pc.get("mean_own_source_auroc") is not None else ""), r)


def bn_reestimated(c: Claims, r: RunInfo) -> None:
    re = r.summary.get("test_bn_reestimated")
    if not isinstance(re, dict) or not re.get("test"):
        return
    a, b = re["test"], r.summary.get("test") or {}
    words = ("the intervals overlap and no paired scores were kept, so the budget cannot say which is better"
             if overlap(a.get("auroc_ci"), b.get("auroc_ci")) is not False
             else "the intervals are disjoint, though without paired scores this is no formal comparison")
    c.say(f"Re-estimating `{r.name}`'s BatchNorm statistics on {fmt(re.get('images'))} validation images gives test "
          f"AUROC {ci(a, 'auroc')} against {ci(b, 'auroc')} with averaged statistics; {words}", r)


def local_only(c: Claims, r: RunInfo) -> None:
    if r.summary.get("strategy") != "local-only":
        return
    c.say(f"Clients training alone (`{r.name}`) reach a mean test AUROC of {auroc(r)}; the mean has no paired "
          "scores, so it is not ranked against the federations", r)


def search(ctx: Context, c: Claims) -> None:
    steps = chain_steps(ctx, SEARCH_CHAIN)
    for s in steps:
        comp = s.evolution.get("comparison") or {}
        if "diff" not in comp:
            continue
        vs = ctx.folders.get(comp.get("vs", ""))
        c.say(f"Recipe-search step `{s.name}` ({s.evolution.get('change', '')}) against "
              f"`{vs.name if vs else comp.get('vs')}`: paired "
              f"difference {comp['diff']:+.3f} {interval(comp.get('ci'), signed=True)}: {comp.get('verdict')}, "
              f"{'accepted' if s.evolution.get('accepted') else 'rejected'}", s)
    accepted = [s for s in steps if s.evolution.get("accepted")]
    if accepted:
        a = accepted[-1]
        c.say(f"The search ends at `{a.name}` with test AUROC {auroc(a)} ({len(accepted)} of {len(steps)} steps "
              "accepted)", a)


def label_efficiency(ctx: Context, c: Claims) -> None:
    le = ctx.stage("label-efficiency")
    if not le:
        return
    x = le[-1]
    for comp in x.summary.get("comparisons") or []:
        c.say(f"With {comp['fraction']:.0%} of the labels, `{comp['init']}` init against scratch: "
              f"{compared(comp)}", x)


def budget_limits(ctx: Context, c: Claims) -> None:
    c.section("#### 4.2 What the budget cannot support")
    base = ctx.baseline()
    groups = ctx.groups("centralized") + ctx.groups("federated")
    single = [g[0] for g in groups if len(g) == 1]
    if base and single:
        b = base[0]
        c.say(f"{len(single)} of {len(groups)} headline runs have a single seed, so their intervals cover the "
              f"{fmt(get(b.summary, 'sizes.test'))} test images' sampling only, not seed-to-seed variation (baseline "
              f"AUROC interval {interval(get(b.summary, 'test.auroc_ci'))})", b)
    comps = comparisons(ctx)
    null = [(g, r, comp) for g, r, comp in comps if comp["verdict"] == "no significant difference"]
    if null:
        g, r, comp = max(null, key=lambda t: t[2]["ci"][1] - t[2]["ci"][0])
        c.say(f"{len(null)} of {len(comps)} paired comparisons find no significant difference: at this budget they "
              f"rank neither of their two runs above the other; the widest interval, `{g[0].name}` against `{r[0].name}`, is "
              f"{comp['diff']:+.3f} {interval(comp['ci'], signed=True)}", g[0], r[0])
    if base:
        b = base[0]
        unequal: dict[tuple, list[RunInfo]] = {}
        for g in ctx.groups("federated"):
            s, e = local_steps(g[0]), epochs_per_client(g[0])
            if s is not None and b.summary.get("steps") is not None and s != b.summary["steps"]:
                unequal.setdefault((s, e), []).append(g[0])
        for (s, e), runs in unequal.items():
            names = ", ".join(f"`{r.name}`" for r in runs)
            c.say(f"{names} made {s} sequential optimizer steps in {fmt(e)} epochs per client against the centralized "
                  f"baseline's {b.summary['steps']} steps in {fmt(b.summary.get('epochs_run'))} epochs (test AUROC "
                  f"{auroc(runs[0])} against {auroc(b)}), so an end-of-training difference mixes federation with "
                  "optimizer budget", *runs, b)


def failures(ctx: Context, c: Claims) -> None:
    c.section("#### 4.3 Where the detector fails")
    base = ctx.baseline()
    if not base:
        return
    b = base[0]
    per = {s: m for s, m in (b.summary.get("test_per_source") or {}).items() if m.get("auroc") is not None}
    if len(per) > 1:
        lo = min(per, key=lambda s: per[s]["auroc"])
        hi = max(per, key=lambda s: per[s]["auroc"])
        ov = overlap(per[lo].get("auroc_ci"), per[hi].get("auroc_ci"))
        c.say(f"Per source, `{b.name}` is weakest on `{lo}` fakes, AUROC {ci(per[lo], 'auroc')}, and strongest on "
              f"`{hi}`, {ci(per[hi], 'auroc')}"
              + ("; the intervals overlap, so this ordering is not established" if ov else
                 "; the intervals are disjoint" if ov is False else ""), b)
    xg = ctx.stage("crossgen")
    if xg:
        from dfflab.report.results_central import logo_rows

        logo = logo_rows(ctx, xg[-1])
        if logo:
            h, (g, m, child) = max(logo.items(), key=lambda kv: kv[1][0].get("gap", 0))
            c.say(f"Left out of training, `{h}` fakes are detected at AUROC {ci(m, 'auroc')} against "
                  f"{fmt(g.get('auroc_in_dist'))} in distribution (gap {g.get('gap', 0):+.3f}), the largest "
                  "leave-one-generator-out drop", child or xg[-1])
    rob = read_optional_json(b.file("robustness.json"))
    if isinstance(rob, dict) and rob.get("distortions"):
        w = max(rob["distortions"], key=lambda d: d["auroc_drop"])
        if w.get("auroc_drop_ci"):
            c.say(f"The strongest distortion, {w['label']}, takes test AUROC from {ci(rob['clean'], 'auroc')} to "
                  f"{ci(w, 'auroc')}: a drop of {w['auroc_drop']:.3f} "
                  f"{interval(w['auroc_drop_ci'], 3)} (paired, the same test images), {w.get('verdict', '')}", b)
        else:
            c.say(f"The strongest distortion, {w['label']}, takes test AUROC from {fmt(rob['clean']['auroc'])} to "
                  f"{fmt(w['auroc'])} (a drop of {w['auroc_drop']:.3f}); robustness.json records no intervals, so "
                  "drops of this size on these test images are indicative only", b)
    uq = read_optional_json(b.file("uq.json"))
    methods = (uq or {}).get("methods") or {}
    if "plain" in methods:
        best = min(methods, key=lambda m: methods[m].get("ece", float("inf")))
        c.say(f"Calibration: the plain detector's expected calibration error is {fmt(methods['plain'].get('ece'))} "
              f"(NLL {fmt(methods['plain'].get('nll'))}); the best method, `{best}`, reaches ECE "
              f"{fmt(methods[best].get('ece'))}; uq.json records point values only", b)
    audit = b.summary.get("audit") or {}
    if get(audit, "metadata.auroc") is not None:
        c.say(f"A classifier on file metadata alone reaches test AUROC {fmt(get(audit, 'metadata.auroc'))} against "
              f"the detector's {fmt(audit.get('detector_auroc'))}"
              + ("; metadata is a usable shortcut here" if get(audit, "metadata.warning") else ""), b)
