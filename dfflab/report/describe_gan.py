"""The conditional GAN as it was trained: generator and discriminator built from each run's
``[gan]`` settings (parameter counts, conditioning), loss, regularisers, EMA and schedule."""

from __future__ import annotations

from dfflab.report.cells import table
from dfflab.report.collect import RunInfo
from dfflab.report.context import Context


def gan_runs(ctx: Context) -> list[RunInfo]:
    """Runs that trained a GAN (their config has ``[gan]`` and they wrote a generator), oldest first."""
    return [r for r in ctx.stage("generative") if r.file("generator.pt").is_file()
            or (r.config.get("gan") and ("fid" in r.summary or "scores" in r.summary or "g_steps" in r.summary))]


def n_classes(r: RunInfo) -> int:
    ref = r.summary.get("reference_per_class") or {}
    per = r.summary.get("per_class") or {}
    return len(ref) or len([c for c in per if c != "overall"]) or 4


def nets(r: RunInfo) -> dict | None:
    """Parameter counts and layer counts of G and D built from the run's ``[gan]`` settings."""
    from torch import nn

    from dfflab.generative.config import GANConfig
    from dfflab.generative.models import build_gan

    gan = r.config.get("gan") or {}
    known = set(GANConfig.__dataclass_fields__)
    try:
        cfg = GANConfig(**{k: v for k, v in gan.items() if k in known})
        g, d = build_gan(cfg, n_classes(r))
    except (TypeError, ValueError):
        return None
    ups = len(g.blocks) if hasattr(g, "blocks") else len(g.ups) + 1  # DCGAN: transposed convs + the last up-sample
    downs = sum(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in d.modules())
    return {"cfg": cfg, "g": sum(p.numel() for p in g.parameters()), "d": sum(p.numel() for p in d.parameters()),
            "g_blocks": ups, "d_blocks": downs}


def _row(r: RunInfo, n: dict) -> list:
    c = n["cfg"]
    return [r.name, f"{n['g']:,}", f"{n['d']:,}",
            "class-conditional BatchNorm" if c.cond_bn else "class embedding concatenated to z",
            "projection" if c.projection else "one-hot maps concatenated to the input",
            c.loss, "yes" if c.spectral_norm else "no", c.diffaug, c.ema or "off",
            f"{c.lr_g:g} / {c.lr_d:g}", f"({c.beta1}, {c.beta2})", c.d_steps, r.summary.get("g_steps", "–")]


def gan_section(ctx: Context) -> list[str]:
    """Section 1.4: the generator, the discriminator and each recorded GAN recipe."""
    lines = ["### 1.4 Conditional GAN", ""]
    runs = gan_runs(ctx)
    built = [(r, nets(r)) for r in runs]
    built = [(r, n) for r, n in built if n is not None]
    if not built:
        return lines + ["No GAN run.", ""]
    last, n = built[-1]
    c = n["cfg"]
    size = c.image_size
    lines += [f"One class-conditional GAN generates all {n_classes(last)} classes (real and each generator's fakes) "
              f"at {size}×{size} px. The generator maps z ({c.z_dim}-d) to a 4×4 map and up-samples it "
              f"{n['g_blocks']} times to a tanh image; the discriminator down-samples {n['d_blocks']} times to a "
              "global sum pool and one realness logit. "
              + ("Both are DCGAN-style, one convolution per resolution (`gan.arch = dcgan`, the lean nets a 2-core "
                 "CPU can train for thousands of steps). " if c.arch == "dcgan" else
                 "Both are built from SNGAN/BigGAN residual blocks (`gan.arch = resnet`). ")
              + f"Widths: G {c.g_width}, "
              f"D {c.d_width} channels at the image end (doubling per block, capped at 8×). The last recipe "
              f"({last.link}): {n['g']:,} generator and {n['d']:,} discriminator parameters; "
              f"{c.epochs} epochs of batch {c.batch_size} ({last.summary.get('g_steps', '–')} generator steps, "
              f"{c.d_steps} discriminator step(s) each), Adam (β {c.beta1}, {c.beta2}) at {c.lr_g:g} (G) / "
              f"{c.lr_d:g} (D)" + (" — the two-time-scale rule (TTUR)" if c.lr_d > c.lr_g else "") + "; samples "
              + ("from an EMA of the generator's weights (decay " + str(c.ema) + ")" if c.ema else "from the generator")
              + ".", ""]
    lines += ["Each recorded recipe (the evolution chain of section 3.8), built from its run's settings:", ""]
    lines += table(["run", "G params", "D params", "G conditioning", "D conditioning", "loss", "spectral norm",
                    "DiffAugment", "EMA", "lr G / D", "Adam β", "D steps", "G steps"],
                   [_row(r, m) for r, m in built])
    return lines
