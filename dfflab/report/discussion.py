"""Section 4, discussion and conclusions: sentences derived from the measurements.

Every sentence carries the numbers (and intervals, where the run recorded or the report can
compute one) it rests on, and links the run folders they come from. A difference is called
better or worse only from a paired interval that excludes zero; comparisons without paired
scores are stated with both intervals and no verdict.
"""

from __future__ import annotations

from dfflab.report.cells import interval, secs
from dfflab.report.claims import Claims, auroc
from dfflab.report.collect import fmt, get
from dfflab.report.context import Context
from dfflab.report.describe_federated import epochs_per_client, local_steps
from dfflab.report.discussion_detector import budget_limits, comparisons, failures, measurements
from dfflab.report.results_gan import detector_evals, fid_text, gan_classes, gan_overall, kid_text


def gan(ctx: Context, c: Claims) -> None:
    from dfflab.report.describe_gan import gan_runs

    c.section("#### 4.4 What the GAN does and does not achieve")
    runs = [r for r in gan_runs(ctx) if gan_overall(r.summary).get("fid") is not None]
    if not runs:
        return
    first, last = runs[0], runs[-1]
    o = gan_overall(last.summary)
    floor = o.get("fid_floor")
    c.say(f"The last GAN recipe `{last.name}` reaches FID {fid_text(o)} and KID {kid_text(o)} with "
          f"{fmt(o.get('n_eval'))} generated images per class"
          + (f", against a real-vs-real floor of {fmt(floor, 1)} at that sample size" if floor else
             "; no real-vs-real floor was recorded, so how far this is from a perfect generator is unknown"), last)
    chains = [r for r in ctx.stage("generative") if isinstance(r.summary.get("chain"), list) and r.summary["chain"]]
    if chains:
        ch = chains[-1]
        steps = ch.summary["chain"]
        moved = [r for r in steps if r.get("parent") is not None and r.get("kid_delta") is not None]

        def change(r: dict) -> str:
            return f"`{r['step']}` {r['kid_delta']:+.4f} {interval(r.get('kid_delta_ci'), 4, signed=True)}"

        acc = [r for r in moved if r.get("accepted")]
        rej = [r for r in moved if not r.get("accepted")]
        c.say(f"The GAN's evolution chain recorded {len(steps)} steps of one change each and accepted {len(acc)} of the "
              f"{len(moved)} changes, each only when KID against its parent fell beyond the paired 95% interval ("
              + "; ".join(change(r) for r in acc) + ")"
              + ("; rejected: " + "; ".join(change(r) for r in rej) if rej else ""), ch)
        f0, fin = steps[0], ch.summary.get("final") or {}
        if fin.get("kid") is not None and f0.get("kid") is not None:
            lo0, hi0 = f0.get("kid_ci") or (None, None)
            lo1, hi1 = fin.get("kid_ci") or (None, None)
            apart = None not in (lo0, hi0, lo1, hi1) and (hi1 < lo0 or hi0 < lo1)
            c.say(f"From the first step `{f0['step']}` ({f0.get('g_steps')} G steps) to the final recipe "
                  f"({fin.get('g_steps')} G steps), KID went from {f0['kid']:.4f} {interval(f0.get('kid_ci'), 4)} "
                  f"(n = {f0.get('n_eval')} per class) to {fin['kid']:.4f} {interval(fin.get('kid_ci'), 4)} "
                  f"(n = {fin.get('n_eval')}); " + ("the two intervals do not overlap" if apart else
                                                    "the two intervals overlap, so the budget cannot rank them"), ch)
    elif first is not last:
        f0 = gan_overall(first.summary)
        c.say(f"The first recipe `{first.name}` had FID {fid_text(f0)}; no evolution chain compared them, so the "
              "change carries no verdict", first, last)
    classes = {k: v for k, v in gan_classes(last.summary).items() if v.get("fid") is not None}
    if len(classes) > 1:
        worst = max(classes, key=lambda k: classes[k]["fid"])
        best = min(classes, key=lambda k: classes[k]["fid"])
        c.say(f"Per class, `{last.name}` is furthest from the real images for `{worst}` (FID {fid_text(classes[worst])}) "
              f"and closest for `{best}` ({fid_text(classes[best])})", last)
    evals = detector_evals(ctx)
    if evals:
        e = evals[-1]
        for key, who in (("fooling", "the baseline detector"), ("fooling_matched", "a detector trained on images "
                                                                                    "resampled like the GAN's")):
            per = get(e.summary, f"{key}.per_class") or {}
            f = per.get("overall")
            if not isinstance(f, dict) or f.get("fooling_rate") is None:
                continue
            real = next((v for k, v in per.items() if k in ("wiki", "real") and isinstance(v, dict)), {})
            control = real.get("called_real_test_resampled")
            c.say(f"Against {who}, a share {fmt(f['fooling_rate'])} of {f.get('n_generated')} generated images is "
                  "called real" + (f", against {fmt(control)} of the real test images sent through the same "
                                   "resampling" if control is not None else ""), e)


def limitations(ctx: Context, c: Claims) -> None:
    c.section("#### 4.5 Limitations")
    base = ctx.baseline()
    if base:
        b = base[0]
        root = str(get(b.config, "data.root", ""))
        if "synthdff" in root.lower():
            c.say(f"All {fmt(get(b.summary, 'sizes.test'))} test images are SynthDFF images (procedural stand-ins at "
                  f"{get(b.config, 'data.image_size')} px, artifact strength {get(b.config, 'data.difficulty')}): the "
                  f"baseline's AUROC {auroc(b)} is a SynthDFF number and says nothing about DFF", b)
        c.say(f"The budget: the baseline trained {fmt(b.summary.get('epochs_run'))} epochs "
              f"({fmt(b.summary.get('steps'))} optimizer steps, {secs(b.summary.get('seconds'))} s) of "
              f"{fmt(get(b.summary, 'sizes.train'))} training images", b)
    groups = ctx.groups("federated")
    # the headline federated run (FedAvg by source) before search steps or any other
    groups = sorted(groups, key=lambda g: g[0].name != "fedavg-source")
    for g in groups[:1]:
        r = g[0]
        c.say(f"Federated runs trained {fmt(epochs_per_client(r))} epochs per client ({fmt(local_steps(r))} sequential "
              f"steps for `{r.name}`, test AUROC {auroc(r)}) on {fmt(r.summary.get('num_partitions'))} simulated "
              "clients on one machine", r)


def conclusions(ctx: Context, c: Claims) -> None:
    c.section("#### 4.6 Conclusions")
    comps = comparisons(ctx)
    sig = [(g, r, comp) for g, r, comp in comps if comp["verdict"] != "no significant difference"]
    for g, r, comp in sig:
        c.say(f"`{g[0].name}` is {comp['verdict']} than `{r[0].name}`: test AUROC difference {comp['diff']:+.3f} "
              f"[{comp['ci'][0]:+.3f}, {comp['ci'][1]:+.3f}]", g[0], r[0])
    if comps and not sig:
        widest = max(comps, key=lambda t: t[2]["ci"][1] - t[2]["ci"][0])
        g, r, comp = widest
        c.say(f"None of the {len(comps)} paired detector comparisons is significant at 95%; the widest interval, "
              f"`{g[0].name}` against `{r[0].name}`, spans [{comp['ci'][0]:+.3f}, {comp['ci'][1]:+.3f}], so these "
              "results rank no method above another", g[0], r[0])
    base = ctx.baseline()
    if base and not comps:
        c.say(f"Only the baseline `{base[0].name}` was measured, test AUROC {auroc(base[0])}: nothing is compared",
              base[0])


def discussion_section(ctx: Context) -> tuple[list[str], Claims]:
    """Section 4 as report lines, and the sentences (for tests)."""
    c = Claims()
    measurements(ctx, c)
    budget_limits(ctx, c)
    failures(ctx, c)
    gan(ctx, c)
    limitations(ctx, c)
    conclusions(ctx, c)
    lines = ["## 4. Discussion and conclusions", "",
             "Every sentence below is computed from the run folders and links them; 'better' and 'worse' come only "
             "from paired intervals that exclude zero.", ""]
    return lines + (c.lines() or ["No measurements to discuss yet.", ""]), c
