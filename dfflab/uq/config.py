"""Settings of uncertainty quantification (section ``[uq]``)."""

from dataclasses import dataclass, field


@dataclass
class UQConfig:
    mc_samples: int = field(default=20, metadata={"help": "MC dropout: stochastic forward passes T."})
    ensemble_size: int = field(default=3, metadata={"help": "Deep ensemble: independently seeded detectors M."})
