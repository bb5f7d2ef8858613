"""Stopping a run cleanly: Ctrl-C or SIGTERM during the training steps stops at the next step boundary
(so the saved state is exactly that of a finished step); elsewhere (validation, a checkpoint write)
it stops at once. Either way the trainer then saves a resumable checkpoint and prints one line.
"""
from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["StopRequests"]


class StopRequests:
    """SIGINT / SIGTERM handlers for the duration of a run (main thread only; a no-op elsewhere).

    ``between_steps`` is True while the training loop is inside a step: a signal then only sets
    ``requested`` and the loop calls :meth:`check` when the step is done. A second signal, or one
    outside the steps, raises ``KeyboardInterrupt`` right away."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self.between_steps = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.between_steps and self.requested is None:
            self.requested = name
            return
        raise KeyboardInterrupt(name)

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` at a step boundary if a stop was asked for."""
        if self.requested is not None:
            raise KeyboardInterrupt(self.requested)


