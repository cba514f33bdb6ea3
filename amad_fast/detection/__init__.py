"""The detector built on the attention library, in floors that only look down:

- :mod:`.detector`: :class:`AMADDetector`, the scikit-learn/PyOD-style estimator (fit, scores,
  threshold, save/load), on :class:`.estimator.DetectorBase`, which the baselines share;
- :mod:`.stream`: live scoring, one row at a time (``AMADDetector.stream()``);
- :mod:`.baselines`: simple detectors (L2 norm, 1-NN, PCA error, IsolationForest, ...) with the same API;
- :mod:`.registry`: every detector by name, :func:`make_detector` / :func:`load_detector` (above both);
- :mod:`.scoring`: per-step scores of a trained model (windows, error normalisation, js weighting,
  stride averaging, smoothing);
- :mod:`.thresholds`: the one place where scores become a threshold;
- :mod:`.training`: the unsupervised training loop (losses, Max-Min gradients, early stopping,
  data parallelism), with :mod:`.checkpoints` and :mod:`.progress`;
- :mod:`.model`: the AMAD network (spec §2) on :class:`amad_fast.attention.AutoMaskAttention`.
"""
from amad_fast.detection.baselines import BASELINES
from amad_fast.detection.detector import AMADDetector
from amad_fast.detection.estimator import DetectorBase
from amad_fast.detection.registry import METHODS, load_detector, make_detector
from amad_fast.detection.stream import StreamScorer

__all__ = ["AMADDetector", "StreamScorer", "DetectorBase", "BASELINES", "METHODS", "make_detector", "load_detector"]
