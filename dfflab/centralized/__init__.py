"""The centralized real-vs-fake detector: the baseline the other stages are measured against.

Modules: ``train`` (one run: train, select on val AUROC, test; ``train_detector``,
``evaluate_checkpoint``), ``crossgen`` (cross-generator protocol), ``robustness``
(distortions), ``audit`` (metadata shortcut audit), ``detect`` (score files),
``plots`` and ``cli``. No Flower import here: the federated stage reuses the same
training core (``dfflab.train.core``).
"""
