"""How a run shows its progress: a tqdm bar on a terminal, else a plain log line every ``every_s``
seconds (a redirected log would otherwise show nothing until an epoch ends)."""

from __future__ import annotations

import logging
import math
import sys
import time

from tqdm import tqdm

log = logging.getLogger("train")


def hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """One epoch's progress. ``update`` after every step; ``close`` before anything else is printed."""

    def __init__(
        self, epoch: int, epochs: int, first: int, steps: int, every_s: float, enabled: bool, jobs_after: int = 0
    ):
        self.epoch, self.epochs, self.steps, self.every_s = epoch, epochs, steps, every_s
        self.jobs_after = jobs_after  # in a sweep: the rounds of jobs still to run after this one
        self.terminal = enabled and sys.stderr.isatty()
        self.lines = enabled and not self.terminal and every_s > 0
        self.bar = tqdm(
            total=steps,
            initial=first,
            desc=f"epoch {epoch + 1}/{epochs}",
            leave=False,
            dynamic_ncols=True,
            disable=not self.terminal,
        )
        self.first, self.start = first, time.perf_counter()
        self.last_line = self.start

    def update(self, step: int, loss: float, acc: float, batch_size: int, steps_left: int) -> None:
        """After step ``step`` (0-based) of this epoch; ``steps_left`` in the whole run."""
        self.bar.update()
        now = time.perf_counter()
        if not (step % 20 == 0 or step == self.steps - 1 or (self.lines and now - self.last_line >= self.every_s)):
            return
        per_step = (now - self.start) / (step + 1 - self.first)
        eta = hms(steps_left * per_step)
        # a sweep's later jobs, each as long as this one at this job's speed
        sweep = (
            f"  sweep eta {hms((steps_left + self.jobs_after * self.epochs * self.steps) * per_step)}"
            if self.jobs_after
            else ""
        )
        unread = math.isnan(loss)  # no loss read yet: each is read one step late
        shown = "-" if unread else f"{loss:.3f}"
        self.bar.set_postfix_str(
            f"loss={shown}, acc={acc:.3f}, img_s={batch_size / per_step:.0f}, run_eta={eta}{sweep}", refresh=False
        )
        if self.lines and now - self.last_line >= self.every_s:
            self.last_line = now
            log.info(
                "epoch %d/%d step %d/%d  loss %s  acc %.4f  %.0f img/s  run eta %s%s",
                self.epoch + 1,
                self.epochs,
                step + 1,
                self.steps,
                "-" if unread else f"{loss:.4f}",
                acc,
                batch_size / per_step,
                eta,
                sweep,
            )

    def close(self) -> None:
        self.bar.close()
