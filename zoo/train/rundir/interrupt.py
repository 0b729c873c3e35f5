"""SIGTERM and Ctrl-C: the loop finishes its step, saves and exits non-zero; before the loop, the
work stops at once with a line that says what was interrupted and that nothing was lost."""

from __future__ import annotations

import signal
import threading
from types import FrameType


class TrainingInterrupted(BaseException):
    """Training stopped on a signal; ``exit_code`` is 128 + the signal number. A BaseException, as
    KeyboardInterrupt is: an ``except Exception`` on the way up (a decoder's) must not swallow it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class _OnSignal:
    """Installs ``self._handle`` for SIGTERM and SIGINT within a ``with`` block, then restores the old ones."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        raise NotImplementedError

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()


class StopOnSignal(_OnSignal):
    """Within ``with StopOnSignal() as stop:``, SIGTERM and SIGINT set ``stop.signum`` instead of killing
    the process; the loop checks it between steps. A second Ctrl-C raises KeyboardInterrupt at once."""

    def __init__(self) -> None:
        super().__init__()
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum


class StopAtOnce(_OnSignal):
    """Within ``with StopAtOnce(what, safe):``, SIGTERM and SIGINT raise :class:`TrainingInterrupted`
    at once: "<SIGNAL> while <what>; <safe>". For the work before the loop (reading a checkpoint,
    decoding the data), which has no step boundary to stop at."""

    def __init__(self, what: str, safe: str):
        super().__init__()
        self.what, self.safe = what, safe

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        raise TrainingInterrupted(f"{signal.Signals(signum).name} while {self.what}; {self.safe}", signum)
