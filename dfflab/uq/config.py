"""Settings of uncertainty quantification (section ``[uq]``).

Which detector is evaluated, its data and its device come from the run folder's own
config (``data``, ``model``, ``train``); this section only says how to quantify its
uncertainty.
"""

from dataclasses import dataclass

from dfflab.settings import doc as _f


@dataclass
class UQConfig:
    methods: list = _f(["plain", "temperature", "mc-dropout", "ensemble", "client-ensemble"],
                       "Methods `dfflab uq evaluate` compares; one whose models the run lacks "
                       "(ensemble members, federated client models) is skipped with the reason.")
    mc_samples: int = _f(20, "MC dropout: stochastic forward passes T.")
    ensemble_size: int = _f(3, "Deep ensemble: independently seeded detectors M (`dfflab uq ensemble`).")
    ece_bins: int = _f(15, "Equal-width p(fake) bins of the ECE and the reliability diagram.")
    coverage: float = _f(0.8, "Selective prediction: share of images kept (the rest abstained) "
                         "for accuracy-at-coverage and the abstain threshold fitted on val.")
    abstain_entropy: float = _f(0.0, "`detect --abstain`: abstain above this predictive entropy "
                                "(bits, 0..1); 0 = the threshold `uq evaluate` fitted on val for "
                                "uq.coverage (stored in detector.pt), else 0.9.")
    batch_size: int = _f(256, "Images per forward pass when scoring.")
