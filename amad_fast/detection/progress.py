"""Progress of a training run: one line per epoch (and every ``PROGRESS_LINE_SECONDS`` within one),
with the time left estimated after the first few optimiser steps."""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Dict, List

if TYPE_CHECKING:
    from amad_fast.detection.training import TrainConfig


def _progress_enabled(cfg: TrainConfig, rank: int) -> bool:
    return bool(cfg.progress) and rank == 0 and sys.stderr.isatty()


# with progress on and stderr not a terminal (a log file, a pipe, a notebook), a line every this
# many seconds and at every epoch end instead of a bar
PROGRESS_LINE_SECONDS = 30.0
ESTIMATE_AFTER_STEPS = 3  # the time estimate is printed after this many timed optimiser steps


def progress_line(text: str) -> None:
    """One progress line on stderr (flushed, so that logs show it at once)."""
    print(text, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class _Progress:
    """What a run says about itself when ``cfg.progress`` is on (rank 0 only): the planned work
    before the first step, a time estimate after the first few steps, and, when stderr is not a
    terminal (no bar), a line every :data:`PROGRESS_LINE_SECONDS` and one per epoch."""

    def __init__(self, cfg: TrainConfig, rank: int, total_steps: int) -> None:
        self.on = bool(cfg.progress) and rank == 0
        self.lines = self.on and not sys.stderr.isatty()
        self.total, self.done, self.timed, self.timed_s = total_steps, 0, 0, 0.0
        self.estimated = False
        self.recent: List[float] = []  # the last 20 step times: what is left is estimated from them
        self.last = time.perf_counter()

    def plan(self, text: str) -> None:
        if self.on:
            progress_line(text)

    def step(self, seconds: float, epoch: int, epochs: int, step: int, steps: int, rec: float) -> None:
        if not self.on:
            return
        self.done += 1
        if self.done > 1:  # the first step carries one-off costs (allocations, kernel choice)
            self.timed += 1
            self.timed_s += seconds
            self.recent = (self.recent + [seconds])[-20:]
        if not self.estimated and (self.timed >= ESTIMATE_AFTER_STEPS or self.done == self.total):
            self.estimated = True
            per = self.timed_s / max(self.timed, 1) if self.timed else seconds
            progress_line(f"estimate: {per:.2f} s per step, about {_duration(per * self.total)} for the "
                          f"{self.total} training steps (plus validation and scoring)")
        now = time.perf_counter()
        if self.lines and now - self.last >= PROGRESS_LINE_SECONDS and step + 1 < steps:
            self.last = now
            progress_line(f"epoch {epoch + 1}/{epochs}: step {step + 1}/{steps}, rec {rec:.4g}, "
                          f"{_duration(self._left())} left")

    def _left(self) -> float:
        per = sum(self.recent) / max(len(self.recent), 1)  # recent steps: the machine's load changes
        return per * max(self.total - self.done, 0)

    def epoch_end(self, record: Dict[str, float], epochs: int) -> None:
        if not self.lines:
            return
        self.last = time.perf_counter()
        val = f", val_rec {record['val_rec']:.4g}" if "val_rec" in record else ""
        progress_line(f"epoch {record['epoch'] + 1}/{epochs} done in {_duration(record['seconds'])}: "
                      f"rec {record['rec']:.4g}{val}" + (f"; about {_duration(self._left())} of training left"
                                                         if self.done < self.total else ""))
