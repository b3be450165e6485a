"""Uncertainty quantification of detectors (`dfflab uq ...`).

``calibration``  temperature scaling, ECE/NLL/Brier, reliability bins
``methods``      METHODS: plain, temperature, mc-dropout, ensemble, client-ensemble
``selective``    risk-coverage, AURC, accuracy at coverage
``unseen``       leave-one-generator-out: does uncertainty flag the unseen generator?
``evaluate``     ``evaluate_run(run_dir)``: uq.json and plots into the run folder
``ensemble``     ``train_ensemble(cfg, m)``: deep ensembles by one command
``detect``       calibrated p(fake), uncertainty and abstaining for ``dfflab detect``
"""
