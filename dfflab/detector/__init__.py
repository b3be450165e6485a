"""The detector library every stage shares; it belongs to no stage.

* :mod:`~dfflab.detector.recipe` -- model, AdamW, schedule, loss, augmentation, seeds:
  how any detector trains (centralized, Flower client, local-only, ensembles, ...);
* :mod:`~dfflab.detector.rows` -- which store rows it trains, selects and is tested on;
* :mod:`~dfflab.detector.scoring` -- the one scoring function (NaN-safe, val threshold);
* :mod:`~dfflab.detector.trainer` -- a whole run: epochs, selection, early stopping, resume;
* :mod:`~dfflab.detector.inference` -- ``dfflab detect`` on image files, with uncertainty;
* :mod:`~dfflab.detector.plots` -- its figures.
"""
