"""The building blocks of dfflab's typed settings, shared by every section's dataclass.

Each stage declares its own section (``[ssl]`` in ``dfflab/ssl/config.py``, ``[fl]`` in
``dfflab/federated/config.py``, ...) with :func:`doc` fields; ``dfflab/config.py``
assembles them into one :class:`~dfflab.config.Config`. This module imports nothing
from dfflab, so every section can use it without an import cycle.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any


class ConfigError(ValueError):
    """A preset or override names an unknown key or carries a value of the wrong type."""


def doc(default: Any, help: str, *, result: bool = True) -> Any:
    """A dataclass field with a default and a one-line help text (shown by ``--help``).

    Args:
        result: whether the setting can change what a run computes. Operational ones
            (threads, worker counts, where outputs go) say ``result=False``: two runs that
            differ only in them are the same run (:func:`dfflab.runs.identity`).
    """
    meta = {"help": help, "result": result}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)
