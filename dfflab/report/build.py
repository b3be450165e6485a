"""``dfflab report``: ``<results>/REPORT.md`` and ``<results>/plots/*.png`` from run folders alone.

Re-runnable at any time without training: it reads ``config.json``, ``metrics.csv``,
``summary.json`` and the per-run JSON/PNG outputs of every finished run under
``<results>/runs``. Every sentence it writes is computed from those numbers.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from dfflab.config import default_store_dir
from dfflab.report import plots
from dfflab.report.collect import (
    RunInfo,
    by_folder,
    collect,
    fmt,
    get,
    read_optional_json,
)
from dfflab.runs import atomic_write_text, git_commit, is_side_run

# Headline metric per stage: (label, getter on a RunInfo, higher is better)
HEADLINES = {
    "centralized": ("test AUROC", lambda r: get(r.summary, "test.auroc"), True),
    "federated": ("test AUROC", lambda r: get(r.summary, "test.auroc"), True),
    "ssl": ("kNN real/fake acc. (test)", lambda r: get(r.summary, "knn.knn_real_fake_acc_test"), True),
    "generative": ("FID (Inception, all classes)", lambda r: _gan_fid(r), False),
    "crossgen": ("mean LOGO AUROC", lambda r: _mean([v.get("auroc_held_out") for v in
                                                    get(r.summary, "logo", {}).values()]), True),
}


def _fooling_table(f: dict) -> list[str]:
    rows = [[c, m.get("fooling_rate"), m.get("n_generated"), m.get("called_real_test_native"),
             m.get("called_real_test_resampled")] for c, m in get(f, "per_class", {}).items()]
    return _table(["class", "generated called real", "n generated", "test images called real (native)",
                   "test images called real (resampled)"], rows) + [""]


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _gan_fid(r: RunInfo):
    for key in ("fid_inception_overall", "fid_inception", "fid_overall", "fid"):
        v = r.summary.get(key)
        if isinstance(v, int | float):
            return float(v)
    for key, v in r.summary.items():
        if key.startswith("fid_") and "overall" in key and isinstance(v, int | float):
            return float(v)
    return None


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return out


def _img(plots_dir: Path, src: Path | None, name: str, alt: str) -> list[str]:
    """Copy a run's PNG into plots/ and link it (nothing if it does not exist)."""
    if src is None or not Path(src).is_file():
        return []
    dest = plots_dir / name
    if Path(src).resolve() != dest.resolve():
        shutil.copyfile(src, dest)
    return [f"![{alt}](plots/{name})", ""]


class ReportBuilder:
    def __init__(self, results: Path | str, pipeline_state: dict | None = None):
        self.results = Path(results)
        self.plots = self.results / "plots"
        self.plots.mkdir(parents=True, exist_ok=True)
        self.runs = collect(self.results)
        self.folders = by_folder(self.runs)
        self.state = pipeline_state or read_optional_json(self.results / "pipeline" / "state.json") or {}

    def stage(self, name: str) -> list[RunInfo]:
        return self.runs.get(name, [])

    def find(self, stage: str, name: str) -> RunInfo | None:
        return next((r for r in self.stage(stage) if r.name == name), None)

    # -- sections -------------------------------------------------------------------------
    def build(self) -> str:
        n = sum(len(v) for v in self.runs.values())
        any_cfg = next((r.record for v in self.runs.values() for r in v), {})
        root = get(any_cfg, "config.data.root", "")
        synth = "synthdff" in str(root).lower()
        lines = ["# dfflab report", ""]
        if synth:
            lines += ["> **These are SynthDFF numbers, not DFF numbers.** SynthDFF is dfflab's procedural",
                      "> stand-in for DeepFakeFace; nothing here says how a method does on real DFF.", ""]
        lines += [f"Built {time.strftime('%Y-%m-%d %H:%M')} from {n} finished run folders under "
                  f"`{self.results / 'runs'}` (code at commit `{git_commit()}`). Rebuild with "
                  "`dfflab report`; regenerate everything with `dfflab pipeline --preset quick`.", ""]
        for section in (self.dataset, self.setup, self.central_vs_fed, self.per_source, self.robustness,
                        self.ssl, self.uq, self.gan, self.evolution, self.timings):
            lines += section()
        return "\n".join(lines) + "\n"

    def dataset(self) -> list[str]:
        lines = ["## 1. Dataset and splits", ""]
        any_run = next((r for v in self.runs.values() for r in v), None)
        store_meta = None
        if any_run is not None:
            data = get(any_run.record, "config.data", {})
            store = data.get("store") or default_store_dir(get(any_run.record, "config.results", "results"),
                                                           data.get("root", ""), data.get("image_size"),
                                                           data.get("jpeg_quality", 0))
            store_meta = read_optional_json(Path(store) / "meta.json")
            lines += [f"Dataset root `{data.get('root')}`, images centre-cropped and resized to "
                      f"{data.get('image_size')}×{data.get('image_size')} px once, identically for reals "
                      f"and fakes; dataset fingerprint `{any_run.record.get('dataset_fingerprint')}`.", ""]
        if store_meta:
            counts = store_meta["counts"]
            sources = sorted({k.split("/")[0] for k in counts}, key=lambda s: (s != "wiki", s))
            rows = [[s] + [counts.get(f"{s}/{sp}", 0) for sp in ("train", "val", "test")] for s in sources]
            lines += _table(["source", "train", "val", "test"], rows) + [""]
            lines += [f"{store_meta['n_images']} images, {store_meta.get('n_bad', 0)} skipped as unreadable. "
                      "Splits keep linked relative paths together (a real and its fakes, partner photos, "
                      "groups.csv groups); "
                      f"leak audit: {(store_meta.get('leaks') or {}).get('message', 'not recorded')}", ""]
        else:
            lines += ["(store metadata not found: run `dfflab data prepare`)", ""]
        return lines

    def setup(self) -> list[str]:
        return ["## 2. Setup and metric definitions", "",
                "- **AUROC**: probability that a random fake scores above a random real (threshold-free).",
                "- **Accuracy / balanced accuracy / F1 / precision / recall**: at the decision threshold chosen "
                "on validation only (max. balanced accuracy); balanced accuracy averages the real and fake recalls, "
                "so the 1 real : 3 fakes imbalance cannot inflate it.",
                "- **Per source**: that generator's fakes against all reals of the same split.",
                "- **EER**: the error rate where false-positive and false-negative rates are equal.",
                "- **Samples processed**: training images seen, summed over clients for federated runs, so "
                "centralized epochs and federated rounds share one axis.",
                "- **ECE / NLL / Brier / AURC**: calibration error (15 bins), negative log-likelihood, mean squared "
                "error of p(fake), area under the risk–coverage curve (lower is better for all four).",
                "- **FID / KID**: Fréchet and kernel Inception distances between generated and held-out images "
                "of one class (lower is better).", ""]

    def central_vs_fed(self) -> list[str]:
        lines = ["## 3. Centralized vs federated", ""]
        runs = self.stage("centralized") + self.stage("federated")
        runs = [r for r in runs if not is_side_run(r.name)]
        if not runs:
            return lines + ["No centralized or federated runs yet.", ""]
        p = plots.curves(runs, self.plots / "central_vs_federated.png")
        if p:
            lines += [f"![test accuracy and AUROC against samples processed](plots/{p.name})", ""]
        rows = [[r.stage, r.name, get(r.summary, "test.auroc"), get(r.summary, "test.accuracy"),
                 get(r.summary, "test.balanced_accuracy"), get(r.summary, "test.eer"),
                 get(r.summary, "samples"), get(r.summary, "seconds")] for r in runs]
        lines += _table(["stage", "run", "test AUROC", "accuracy", "bal. acc.", "EER", "samples", "seconds"], rows)
        lines += [""]
        base = self.find("centralized", "scratch")
        if base and get(base.summary, "test.auroc") is not None:
            b = base.summary["test"]["auroc"]
            for r in self.stage("federated"):
                v = get(r.summary, "test.auroc")
                if v is not None:
                    lines.append(f"- {r.name}: test AUROC {v:.3f}, {v - b:+.3f} against the centralized "
                                 f"baseline ({b:.3f}).")
            lines.append("")
        return lines

    def per_source(self) -> list[str]:
        lines = ["## 4. Per-source and cross-generator results", ""]
        runs = [r for r in self.stage("centralized") + self.stage("federated")
                if not is_side_run(r.name)]
        p = plots.per_source_bars(runs, self.plots / "per_source.png")
        if p:
            lines += [f"![per-source test AUROC](plots/{p.name})", ""]
        xg = self.stage("crossgen")
        if xg:
            x = xg[-1]
            lines += _img(self.plots, x.file("crossgen.png"), "crossgen.png", "cross-generator AUROC")
            if get(x.summary, "table"):
                lines += [x.summary["table"], ""]
            logo = get(x.summary, "logo", {})
            worst = max(logo.items(), key=lambda kv: kv[1].get("gap", 0), default=None)
            if worst:
                lines += [f"The largest leave-one-generator-out drop is for **{worst[0]}**: AUROC "
                          f"{fmt(worst[1]['auroc_held_out'])} on its unseen fakes vs "
                          f"{fmt(worst[1]['auroc_in_dist'])} in distribution ({worst[1]['gap']:+.3f}).", ""]
        else:
            lines += ["Cross-generator protocol not run (`dfflab centralized crossgen`).", ""]
        return lines

    def robustness(self) -> list[str]:
        lines = ["## 5. Robustness and shortcut audit", ""]
        base = self.find("centralized", "scratch")
        rob = read_optional_json(base.file("robustness.json")) if base else None
        if rob:
            rows = [["clean", "", rob["clean"]["auroc"], None]]
            rows += [[d["name"], f"{d['param']}={d['strength']}", d["auroc"], -d["auroc_drop"]]
                     for d in rob["distortions"]]
            lines += [f"Detector `{base.name}` on {rob['n_test']} test images:", ""]
            lines += _table(["distortion", "strength", "test AUROC", "change"], rows) + [""]
            lines += _img(self.plots, base.file("robustness.png"), "robustness.png", "robustness")
            worst = max(rob["distortions"], key=lambda d: d["auroc_drop"], default=None)
            if worst:
                lines += [f"The largest drop comes from {worst['label']}: AUROC {worst['auroc']:.3f} "
                          f"({-worst['auroc_drop']:+.3f}).", ""]
        audit = get(base.summary, "audit") if base else None
        if audit:
            meta = audit.get("metadata", {})
            lines += [f"**Shortcut audit.** A classifier on metadata alone (width, height, aspect ratio, file size, "
                      f"JPEG quality) reaches test AUROC {fmt(meta.get('auroc'))}; the detector, which sees only "
                      f"identically cropped and resized pixels, reaches {fmt(audit.get('detector_auroc'))}.", "",
                      f"> {audit.get('message', '')}", ""]
        if not rob and not audit:
            lines += ["Not run.", ""]
        return lines

    def ssl(self) -> list[str]:
        lines = ["## 6. Self-supervised pretraining and label efficiency", ""]
        runs = self.stage("ssl")
        if runs:
            rows = [[r.name, get(r.summary, "views"), get(r.summary, "epochs"),
                     get(r.summary, "random_init.knn_real_fake_acc"), get(r.summary, "knn.knn_real_fake_acc_test"),
                     get(r.summary, "knn.knn_source_acc_test"), get(r.summary, "linear.linear_real_fake_acc_test"),
                     get(r.summary, "linear.linear_source_acc_test"), get(r.summary, "seconds")] for r in runs]
            lines += _table(["run", "views", "epochs", "kNN r/f (random init, val)", "kNN real/fake (test)",
                             "kNN 4-way source (test)", "linear real/fake (test)", "linear source (test)",
                             "seconds"], rows) + [""]
            p = plots.metric_over_epochs(runs, ["knn_real_fake_acc", "knn_source_acc"],
                                         self.plots / "ssl_knn.png", title="kNN accuracy on val during SSL")
            if p:
                lines += [f"![kNN during pretraining](plots/{p.name})", ""]
        views = [r for r in self.stage("ssl-views") if r.file("views_experiment.md").is_file()]
        if views:  # `dfflab ssl compare-views`: the evidence for ssl.views' default
            text = views[-1].file("views_experiment.md").read_text().strip()
            lines += [text.replace("# SSL views experiment", "### Views experiment"), ""]
        le = self.stage("label-efficiency")
        if le:
            x = le[-1]
            md = x.file("label_efficiency.md")
            if md.is_file():
                lines += [md.read_text().strip(), ""]
            lines += _img(self.plots, x.file("label_efficiency.png"), "label_efficiency.png", "label efficiency")
        if not runs and not le:
            lines += ["Not run.", ""]
        return lines

    def uq(self) -> list[str]:
        lines = ["## 7. Uncertainty", ""]
        found = False
        for r in self.stage("centralized") + self.stage("federated"):
            uq = read_optional_json(r.file("uq.json"))
            if not uq:
                continue
            found = True
            lines += [f"### {r.stage}: {r.name}", ""]
            methods = uq.get("methods", {})
            keys = ("ece", "nll", "brier", "aurc", "auroc")
            rows = [[m] + [get(v, k) for k in keys] for m, v in methods.items() if isinstance(v, dict)]
            if rows:
                lines += _table(["method", "ECE", "NLL", "Brier", "AURC", "AUROC"], rows) + [""]
            unseen = uq.get("unseen")
            if isinstance(unseen, dict) and unseen:
                lines += ["Unseen-generator separation (AUROC of each uncertainty score, held-out vs seen fakes):", ""]
                lines += [f"- {k}: {fmt(v) if not isinstance(v, dict) else ', '.join(f'{a} {fmt(b)}' for a, b in v.items() if not isinstance(b, dict))}"
                          for k, v in unseen.items()] + [""]
            for png in ("reliability.png", "risk_coverage.png"):
                lines += _img(self.plots, r.file(png), f"uq_{r.name}_{png}", png[:-4].replace("_", " "))
        if not found:
            lines += ["Not run (`dfflab uq evaluate RUN`).", ""]
        return lines

    def gan(self) -> list[str]:
        lines = ["## 8. Conditional GAN", ""]
        runs = [r for r in self.stage("generative") if _gan_fid(r) is not None]
        if not runs:
            return lines + ["Not run (`dfflab generative train`).", ""]
        last = runs[-1]
        n_gen, n_ref = get(last.summary, "generated_per_class"), get(last.summary, "reference_per_class", {})
        lines += [f"FID/KID against held-out reals of each class ({n_gen} generated per class vs "
                  f"{', '.join(f'{c} {n}' for c, n in n_ref.items())} real); FD-SSL is the Fréchet "
                  "distance in the SSL backbone's feature space (blank where no SSL run existed).", ""]
        rows = [[r.name, r.parent or "", _gan_fid(r), get(r.summary, "kid_inception_overall"),
                 get(r.summary, "fid_ssl_overall"), get(r.summary, "train_seconds"), r.note] for r in runs]
        lines += _table(["run", "parent", "FID (Inception)", "KID (Inception)", "FD-SSL", "train seconds",
                         "note"], rows) + [""]
        classes = [c for c in get(last.summary, "scores.inception", {}) if c != "overall"]
        if classes:
            lines += [f"Per class, {last.name}:", ""]
            lines += _table(["class", "FID", "KID", "FD-SSL"],
                            [[c, get(last.summary, f"fid_inception_{c}"), get(last.summary, f"kid_inception_{c}"),
                              get(last.summary, f"fid_ssl_{c}")] for c in classes]) + [""]
        p = plots.metric_over_epochs(runs, ["fid"], self.plots / "gan_fid.png", title="FID during training")
        if p:
            lines += [f"![FID over training](plots/{p.name})", ""]
        grids = sorted(last.run.dir.glob("samples_epoch*.png"), key=lambda f: int(f.stem[len("samples_epoch"):]))
        if grids:
            lines += _img(self.plots, grids[-1], "gan_samples.png", f"samples of {last.name} (one row per class)")
        return lines + self.gan_vs_detector()

    def gan_vs_detector(self) -> list[str]:
        evals = [r for r in self.stage("generative") if r.name == "detector-eval"]
        if not evals:
            return []
        r = evals[-1]
        f = get(r.summary, "fooling", {})
        lines = [f"### Against the detector ({r.name}, GAN run {r.parent})", "",
                 f"Share called real by {f.get('detector')} at its validation threshold "
                 f"{fmt(f.get('threshold'))}; GAN images ({f.get('gan_image_size')} px) are upsampled to "
                 f"the detector's {f.get('detector_image_size')} px, and held-out test images sent through the "
                 "same down- and up-sampling are the control.", ""]
        lines += _fooling_table(f)
        m = get(r.summary, "fooling_matched")
        if m:
            lines += [f"Against a detector trained on images resampled through {m.get('gan_image_size')} px like "
                      f"the GAN's ({m.get('detector_run')}, test AUROC {fmt(m.get('detector_test_auroc'))} on "
                      f"resampled images, threshold {fmt(m.get('threshold'))}), so that resampling is no tell:", ""]
            lines += _fooling_table(m)
        logo = get(r.summary, "augmented_logo.held_out")
        if logo:
            lines += ["GAN-augmented leave-one-generator-out (test AUROC on the held-out generator):", ""]
            lines += _table(["held out", "without GAN fakes", "with GAN fakes", "change"],
                            [[h, m["auroc_base"], m["auroc_gan"], m["delta"]] for h, m in logo.items()]) + [""]
        return lines

    def evolution(self) -> list[str]:
        lines = ["## 9. How the models evolved", "",
                 "Each run names its parent and says what it changes and why; the change in the stage's "
                 "headline metric is measured against the parent.", ""]
        chains: dict[str, list[tuple[str, float | None]]] = {}
        labels = {}
        for stage, (label, getter, higher) in HEADLINES.items():
            # chain members only: sweep cells and tables without the headline metric are left out
            runs = [r for r in self.stage(stage) if not is_side_run(r.name)
                    and getter(r) is not None]
            if not runs:
                continue
            labels[stage] = label
            rows = []
            for r in runs:
                m = getter(r)
                parent = self.folders.get(r.parent or "")
                pm = getter(parent) if parent is not None and parent.stage == stage else None
                if parent is not None and parent.stage != stage:
                    pm = HEADLINES.get(parent.stage, (None, lambda _: None))[1](parent)
                delta = m - pm if m is not None and pm is not None else None
                rows.append([r.name, parent.name if parent else "–", m, delta, r.note])
            lines += [f"### {stage} ({label}, {'higher' if higher else 'lower'} is better)", ""]
            lines += _table(["run", "parent", label, "change vs parent", "why (the run's note)"], rows) + [""]
            chains[stage] = [(r[0], r[2]) for r in rows]
        p = plots.evolution(chains, labels, self.plots / "evolution.png")
        if p:
            lines += [f"![evolution](plots/{p.name})", ""]
        return lines

    def timings(self) -> list[str]:
        stages = self.state.get("stages", {})
        if not stages:
            return []
        rows = [[s, v.get("status"), v.get("seconds"), v.get("peak_rss_mb")] for s, v in stages.items()]
        return ["## 10. Pipeline timings", ""] + _table(["stage", "status", "seconds", "peak memory so far (MB)"],
                                                        rows) + [""]


def build_report(results: Path | str = "results", pipeline_state: dict | None = None) -> Path:
    """Write ``<results>/REPORT.md`` (and plots); returns its path."""
    builder = ReportBuilder(results, pipeline_state)
    path = Path(results) / "REPORT.md"
    atomic_write_text(path, builder.build())
    return path
