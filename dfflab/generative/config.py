"""Settings of the conditional GAN stage (section ``[gan]``)."""

from dataclasses import dataclass, field


@dataclass
class GANConfig:
    image_size: int = field(default=32, metadata={"help": "Generated image side (32, 64 or 128)."})
    epochs: int = field(default=20, metadata={"help": "Training epochs."})
    batch_size: int = field(default=64, metadata={"help": "Images per step."})
