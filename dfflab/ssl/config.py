"""Settings of the SSL pretraining stage (section ``[ssl]``)."""

from dataclasses import dataclass, field


@dataclass
class SSLConfig:
    method: str = field(default="simclr", metadata={"help": "simclr or byol."})
    epochs: int = field(default=10, metadata={"help": "Pretraining epochs."})
    batch_size: int = field(default=128, metadata={"help": "Images per step (two views each)."})
    lr: float = field(default=1e-3, metadata={"help": "Peak learning rate (AdamW, warmup + cosine)."})
