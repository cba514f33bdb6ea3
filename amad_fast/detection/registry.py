"""Every detector of the package by name: :func:`make_detector`, :func:`load_detector`, :data:`METHODS`.

This module sits above both kinds of detector (:class:`~amad_fast.detection.detector.AMADDetector`
and the baselines of :mod:`amad_fast.detection.baselines`), so that neither has to import the
other to make or open one by name (the command line's ``benchmark`` and ``load_detector`` do).
"""
from __future__ import annotations

import os
from typing import Any

from amad_fast.detection.baselines import BASELINES, PointScoreDetector
from amad_fast.detection.baselines import FORMAT as BASELINE_FORMAT
from amad_fast.detection.detector import FORMAT as AMAD_FORMAT
from amad_fast.detection.detector import AMADDetector
from amad_fast.files import read_file

__all__ = ["METHODS", "make_detector", "load_detector"]

#: every name :func:`make_detector` knows: AMAD and the baselines.
METHODS = ("amad",) + tuple(BASELINES)


def make_detector(name: str, **params: Any):
    """A new, unfitted detector by method name (:data:`METHODS`); ``params`` go to its constructor.

    ``"amad"`` gives :class:`~amad_fast.detection.detector.AMADDetector`; the others the baselines
    of :data:`~amad_fast.detection.baselines.BASELINES`.
    """
    if name == "amad":
        return AMADDetector(**params)
    if not isinstance(name, str) or name not in BASELINES:
        raise ValueError(f"method: expected one of {list(METHODS)}, got {name!r}")
    return BASELINES[name](**params)


def load_detector(path: Any, **kwargs: Any):
    """Open any detector file: AMAD's (format ``"amad_fast.detector/1"``, via ``AMADDetector.load``,
    which takes ``device``/``backend`` in ``kwargs``) or a baseline's (``"amad_fast.baseline/1"``).

    Read safely (:func:`amad_fast.files.read_file`: ``weights_only=True``, format and checksum
    checked); a missing file is a FileNotFoundError, anything else wrong a FileFormatError
    (ValueError) naming the path."""
    p = os.fspath(path)
    state = read_file(p, "detector file", formats=(AMAD_FORMAT, BASELINE_FORMAT), what="a detector file")
    fmt = state.get("format")
    if fmt == AMAD_FORMAT:
        unknown = sorted(set(kwargs) - {"device", "backend"})
        if unknown:
            raise TypeError(f"load_detector: unexpected keyword argument(s) {unknown}; AMAD files take device, backend")
        return AMADDetector._from_file_state(state, p, **kwargs)
    if kwargs:
        raise TypeError(f"load_detector: {sorted(kwargs)} apply to AMAD detector files only; {p} is {fmt!r}")
    if fmt == BASELINE_FORMAT:
        return PointScoreDetector._from_state(state, p)
    raise ValueError(f"{p}: expected a detector file of format {AMAD_FORMAT!r} or {BASELINE_FORMAT!r}, "
                     f"got format {fmt!r}")
