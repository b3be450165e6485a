"""Settings of the SSL pretraining stage (section ``[ssl]``).

Device, precision, threads and the seed come from ``[train]`` (``train.device``,
``train.amp``, ``train.threads``, ``train.seed``) so pretraining and fine-tuning run
under the same conditions. The backbone is ``[model]``'s, so it fits the detector.
"""

from dataclasses import dataclass

from dfflab.settings import doc as _f


@dataclass
class SSLConfig:
    method: str = _f("simclr", "simclr or byol.")
    epochs: int = _f(10, "Pretraining epochs.")
    batch_size: int = _f(256, "Images per step (two views each).")
    lr: float = _f(2e-3, "Peak learning rate (AdamW, linear warmup + cosine decay).")
    weight_decay: float = _f(1e-4, "AdamW weight decay.")
    warmup_epochs: float = _f(1.0, "Linear warmup length in epochs.")
    views: str = _f("shift", "View recipe (dfflab/ssl/views.py): shift (flip + integer translation: "
                    "the default, because it moves pixels without altering them, and the views "
                    "experiment, results/ssl-views-experiment.md, found no recipe better by kNN real/fake), "
                    "jitter (+ colour jitter, greyscale), patch (two half-size windows + jitter), crop (+ mild resized crop), imagenet (SimCLR's colour jitter, grey, blur, heavy crop).")
    reals_only: bool = _f(False, "Pretrain on the training split's reals only (no fake ever seen).")
    temperature: float = _f(0.5, "SimCLR NT-Xent temperature (0.5: SimCLR appendix B.9, CIFAR-10 scale).")
    proj_hidden: int = _f(512, "Hidden width of the projection/prediction MLPs (papers: 2048/4096; "
                          "smaller for the narrow CPU backbone).")
    proj_dim: int = _f(128, "Output width of the projection head (SimCLR: 128; BYOL: 256).")
    momentum: float = _f(0.99, "BYOL target momentum at the start; cosine-scheduled to 1 (BYOL sec. 3.1).")
    knn_k: int = _f(20, "kNN monitor: neighbours.")
    knn_t: float = _f(0.1, "kNN monitor: temperature of the similarity weights (Wu et al. 2018).")
    knn_bank: int = _f(10000, "kNN monitor and linear probe: at most this many training images in the "
                       "feature bank / probe training set (a fixed random subset; 0 = all).")
    probe_l2: float = _f(1e-4, "Linear probe: L2 penalty of the logistic regression.")
    label_fractions: list = _f(["0.01", "0.1", "1"], "Label-efficiency experiment: shares of training labels.")
    label_budget: str = _f("steps", "Label-efficiency budget: steps (every fraction trains as many optimizer steps "
                           "as the full-label run: epochs, warmup and validation interval scaled up) or epochs "
                           "(the same epochs: a 1% run then makes ~1% of the steps).")
    label_seeds: int = _f(1, "Label-efficiency experiment: fine-tuning seeds per (init, fraction) cell.")
