"""Training checkpoints: what a checkpoint records of the data it was trained on, reading one back,
the random-number state, and the checks that refuse to resume from another run's checkpoint."""
from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import TYPE_CHECKING, Any, Dict, Tuple

import numpy as np
import torch
from torch import Tensor

from amad_fast.detection.model import AMAD
from amad_fast.files import read_file

if TYPE_CHECKING:
    from amad_fast.detection.training import TrainConfig

CHECKPOINT_NAME = "last.pt"
CHECKPOINT_FORMAT = "amad_fast.checkpoint/1"


def data_fingerprint(series: Any) -> Dict[str, Any]:
    """What a checkpoint records of the (standardised) training series it was trained on: the
    shape and ``"sha256:<hex>"`` of the float32 values' bytes. Resuming on other data is refused."""
    if isinstance(series, Tensor):
        series = series.detach().cpu().numpy()
    a = np.ascontiguousarray(np.asarray(series), dtype=np.float32)
    h = hashlib.sha256(repr(a.shape).encode())
    h.update(memoryview(a).cast("B"))
    return {"shape": list(a.shape), "sha256": h.hexdigest()}


_CHECKPOINT_HINT = ("A checkpoint written by amad_fast before checkpoints became plain data (it pickled numpy's "
                    "RNG state) cannot be read safely: delete it to train from the start")


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Load a training checkpoint written by :func:`train_model`, safely: ``torch.load`` with
    ``weights_only=True`` (no code runs from the file, whoever made it), format and checksum
    checked (:func:`amad_fast.files.read_file`). A file that is not a valid checkpoint is a
    :class:`~amad_fast.files.FileFormatError` (a ValueError) naming it."""
    return read_file(path, "checkpoint", formats=(CHECKPOINT_FORMAT,), what="an amad_fast training checkpoint",
                     hint=_CHECKPOINT_HINT)


def _rng_state() -> Dict[str, Any]:
    """The torch, numpy and Python RNG states as tensors and plain data (readable with weights_only=True)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "python": {"version": int(py_version), "internal": [int(v) for v in py_internal],
                   "gauss_next": None if py_gauss is None else float(py_gauss)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`_rng_state` recorded, bit for bit."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]),
                         float(n["cached_gaussian"])))
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["internal"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _version_key(version: str) -> Tuple[str, ...]:
    return tuple(str(version).split(".")[:2])


# settings that may change between a run and its resumption; every other one must match
_RESUME_FREE = ("epochs", "progress", "checkpoint_dir", "resume", "checkpoint_every", "patience")


def _check_resumable(ck: Dict[str, Any], cfg: TrainConfig, model: AMAD, data: Dict[str, Any], path: str) -> None:
    """Refuse to resume from a checkpoint written by an incompatible package version (another
    major.minor: the training code may differ, so the run would not continue bit-for-bit), for
    other training data (``data``: :func:`data_fingerprint` of the series now), or with another
    model or training setup."""
    from amad_fast import __version__

    written = str(ck.get("package_version"))
    if _version_key(written) != _version_key(__version__):
        raise ValueError(f"resume: {path} was written by amad_fast {written}, this is {__version__} (another "
                         f"major.minor version: training would not continue as it started); train from the "
                         f"start with another checkpoint_dir, or resume with amad_fast {written}")
    saved_data = ck.get("data") or {}
    if saved_data.get("sha256") != data["sha256"] or list(saved_data.get("shape", [])) != data["shape"]:
        raise ValueError(f"resume: {path} was written for other training data (series of shape "
                         f"{tuple(saved_data.get('shape', ()))}, sha256 {str(saved_data.get('sha256'))[:12]}…; now shape "
                         f"{tuple(data['shape'])}, sha256 {data['sha256'][:12]}…, both after standardisation); "
                         "resume with the same data and preprocessing, or use another checkpoint_dir")
    saved = {"val_split": "tail"}  # checkpoints written before the option held out the tail
    saved.update({k: v for k, v in ck.get("config", {}).items() if k not in _RESUME_FREE})
    now = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _RESUME_FREE}
    diff = {k: (saved.get(k), now.get(k)) for k in set(saved) | set(now) if saved.get(k) != now.get(k)}
    mc_saved = {k: v for k, v in ck.get("model_config", {}).items() if k != "backend"}
    mc_now = {k: v for k, v in model.config.items() if k != "backend"}
    diff.update({f"model.{k}": (mc_saved.get(k), mc_now.get(k)) for k in set(mc_saved) | set(mc_now)
                 if mc_saved.get(k) != mc_now.get(k)})
    if diff:
        detail = ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ValueError(f"resume: {path} was written with other settings ({detail}); "
                         "use the same settings or another checkpoint_dir")
