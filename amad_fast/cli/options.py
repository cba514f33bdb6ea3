"""The command line's shared options: every AMADDetector parameter as an option of ``train`` and
``demo`` (choices from the package's constants), data and scoring overrides."""
from __future__ import annotations

import argparse
import inspect
from typing import Any, Dict, Optional

# help for every AMADDetector parameter exposed as an option of `train` and `demo`
DETECTOR_HELP: Dict[str, str] = {
    "window_size": "window length L in time steps",
    "d_model": "model width (embedding size)",
    "n_heads": "attention heads per block (d_model/n_heads must be even)",
    "n_layers": "number of AutoMask blocks",
    "num_scales": "AutoMask scales S (frequency ladders combined by learned weights)",
    "d_ff": "hidden width of the feed-forward layers",
    "dropout": "dropout on the residual branches and the embedding",
    "maxmin": "Max-Min strategy: exact (three gradient routes), joint (one backward), off (no divergence terms)",
    "k": "weight k of the divergence terms D^M, D^G",
    "mu": "weight mu of the local-global contrastive loss",
    "tau": "temperature of the contrastive InfoNCE loss",
    "lr": "Adam learning rate",
    "epochs": "maximum training epochs (early stopping may end sooner)",
    "batch_size": "training windows per optimiser step (the global batch under torchrun)",
    "train_stride": "step between the starts of training windows",
    "val_fraction": "fraction of the training series held out for early stopping and the error_norm scale",
    "val_split": "where the held-out fraction sits: tail (the end of the series) or blocks (the end of each "
                 "of many blocks of ~2*window_size/val_fraction steps, so concatenated entities all train)",
    "patience": "epochs without validation improvement before stopping",
    "score": "anomaly score: recon_js (softmax(-T*js) x squared error) or recon (squared error)",
    "error_norm": "per-channel error weighting: channel (divide by the validation-split error) or none (spec mean)",
    "position_norm": "divide each window position's error by its training mean (train), so a series' first and "
                     "last steps score like the middle, or none",
    "binary_scaling": "input scaling of two-valued (on/off) channels: unit (0/1) or zscore like the others",
    "smooth": "centred moving average of the scores over this many steps (1 = off)",
    "score_stride": "step between scoring windows; each step's score is the mean over the windows covering it "
                    "(window_size = the paper's non-overlapping windows)",
    "threshold": "threshold rule: train (the 1-c quantile of the training scores, c = --contamination, fixed at "
                 "fit time), pot (peaks over threshold on the training scores), or paper (the published papers' "
                 "protocol, to compare with their tables: that quantile of the training and the scored data's "
                 "scores together, so a fraction c of any scored data is flagged, even clean data)",
    "contamination": "expected fraction c of anomalous steps, in (0, 1), for the quantile thresholds (0.01 = 1 %%; "
                     "SMAP/MSL 0.01, SMD 0.005, SWaT 0.001)",
    "temperature": "temperature T of the recon_js score",
    "backend": "AutoMask attention backend: auto, reference, triton or cpp",
    "device": "torch device: auto (cuda when available, else cpu), cpu, cuda or cuda:N",
    "seed": "random seed (model init, data order, dropout)",
    "checkpoint_dir": "write a resumable training checkpoint (last.pt) here every epoch",
    "resume": "continue training from CHECKPOINT_DIR/last.pt",
    "progress": "show a progress bar (only when stderr is a terminal)",
    "score_batch_size": "windows per batch when scoring",
    "nan_policy": "non-finite input values: interpolate (with a warning) or raise",
}

# what an option whose default is None means, said in --help instead of "None"
NONE_MEANS: Dict[str, str] = {"d_ff": "2*d_model", "smooth": "window_size // 2", "score_stride": "window_size // 10",
                              "checkpoint_dir": "none, no checkpoints"}

DEMO_SIZES = dict(window_size=50, d_model=32, n_heads=4, n_layers=2, num_scales=2, d_ff=64, epochs=4,
                  train_stride=10, batch_size=32, lr=1e-3, threshold="train", contamination=0.05)
DEMO_DATA = "synthetic:length=4000,channels=6,seed=0,train_length=6000"


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a count of steps, rows or workers)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (at least 1), got {text!r}")
    return value


def _seed(text: str) -> int:
    """argparse type: a seed, an integer in [0, 2**63)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed in [0, 2**63), got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected an integer seed in [0, 2**63), got {text!r}")
    return value


def _contamination(text: str) -> float:
    """argparse type: a fraction in (0, 1) (:func:`amad_fast.detection.thresholds.check_contamination`)."""
    from amad_fast.detection.thresholds import check_contamination

    try:
        return check_contamination(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1) (e.g. 0.01 for 1 %), got {text!r}") from None


def _detector_defaults() -> Dict[str, Any]:
    from amad_fast.detection.detector import AMADDetector

    return {p.name: p.default for p in inspect.signature(AMADDetector.__init__).parameters.values()
            if p.name != "self"}


def _add_detector_options(p: argparse.ArgumentParser, overrides: Optional[Dict[str, Any]] = None) -> None:
    g = p.add_argument_group("detector and training options")
    from amad_fast.data import BINARY_SCALINGS
    from amad_fast.data.series import NAN_POLICIES
    from amad_fast.detection.scoring import ERROR_NORMS, POSITION_NORMS, SCORES
    from amad_fast.detection.thresholds import THRESHOLDS
    from amad_fast.detection.training import MAXMIN_MODES, VAL_SPLITS

    choices = {"maxmin": MAXMIN_MODES, "score": SCORES, "error_norm": ERROR_NORMS, "position_norm": POSITION_NORMS,
               "binary_scaling": BINARY_SCALINGS, "val_split": VAL_SPLITS, "threshold": THRESHOLDS,
               "backend": backend_choices(), "nan_policy": NAN_POLICIES}
    for name, default in _detector_defaults().items():
        default = (overrides or {}).get(name, default)
        flag = "--" + name.replace("_", "-")
        help_text = DETECTOR_HELP[name] + " (default: " + (NONE_MEANS[name] if default is None else "%(default)s") + ")"
        if isinstance(default, bool):
            g.add_argument(flag, dest=name, default=default, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            kind = type(default) if default is not None else (str if name == "checkpoint_dir" else int)
            if name == "seed":
                kind = _seed
            elif name == "contamination":
                kind = _contamination
            elif name in ("epochs", "batch_size", "train_stride", "window_size", "d_model", "n_heads", "n_layers",
                          "num_scales", "patience", "score_batch_size", "d_ff", "smooth", "score_stride"):
                kind = _positive_int
            g.add_argument(flag, dest=name, type=kind, default=default, choices=choices.get(name), help=help_text)


def _detector_from_args(args) -> "Any":
    from amad_fast.detection.detector import AMADDetector

    return AMADDetector(**{name: getattr(args, name) for name in _detector_defaults()})


def _add_data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None,
                   help="directory to look up bare data-set names in (also $AMAD_DATA)")


def backend_choices() -> tuple:
    """The values ``backend=`` takes: "auto" and every backend of the dispatch (imported on first use)."""
    from amad_fast.attention.dispatch import BACKENDS

    return ("auto", *BACKENDS)


def _add_device_overrides(p: argparse.ArgumentParser) -> None:
    """--device and --backend, which override a saved detector's stored ones."""
    p.add_argument("--device", default=None, help="override the stored device")
    p.add_argument("--backend", default=None, choices=backend_choices(), help="override the stored attention backend")


def _add_scoring_overrides(p: argparse.ArgumentParser, max_steps_help: str) -> None:
    """Options shared by the subcommands that run a saved detector: step limit, device, backend, data root."""
    p.add_argument("--max-steps", type=_positive_int, default=None, metavar="N", help=max_steps_help)
    _add_device_overrides(p)
    _add_data_root(p)
