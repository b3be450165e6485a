"""The centralized stage: the baseline every other method is measured against.

Modules: ``crossgen`` (cross-generator protocol: single-source matrix and
leave-one-generator-out), ``distortions`` (test AUROC under image distortions) and
``cli`` (``dfflab centralized ...`` and ``dfflab detect``). Training, scoring and
inference of a detector live in :mod:`dfflab.detector`, shared with every other stage.
"""
