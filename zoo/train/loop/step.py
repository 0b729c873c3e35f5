"""One training step, one evaluation pass, and the checks around them: a loss watched one step late
(no sync), running sums a checkpoint can carry, the error for a run that diverged."""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..data.batches import normalize
from ..data.cifar10 import Split
from ..errors import TrainingDiverged


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    x: Tensor,
    y: Tensor,
    lr: float,
    amp: bool,
    target: Tensor | None = None,
    accum_steps: int = 1,
    clip_grad: float | None = None,
    clip_mode: str = "norm",
) -> tuple[Tensor, Tensor]:
    """One SGD/AdamW step at learning rate ``lr`` towards ``target`` (soft targets of mixup / cutmix;
    default: the labels ``y``); returns the batch's mean loss and the number correct against ``y`` (device
    tensors, no sync).

    ``x`` is split into ``accum_steps`` micro-batches, one forward and backward each, every loss weighted
    by its share of the batch: the summed gradients are those of the whole batch's mean loss, so the step
    is the one a single pass over ``x`` takes, but for batch norm, whose statistics are per micro-batch.
    Then the gradients are clipped (``clip_grad``: their global norm, or each value with ``clip_mode=value``).
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    total, correct = accumulate_gradients(model, criterion, x, y, y if target is None else target, amp, accum_steps)
    if clip_grad is not None:
        clip_gradients(optimizer, clip_grad, clip_mode)
    optimizer.step()
    return total, correct


def accumulate_gradients(
    model: nn.Module, criterion: nn.Module, x: Tensor, y: Tensor, target: Tensor, amp: bool, accum_steps: int
) -> tuple[Tensor, Tensor]:
    """Forward and backward over ``accum_steps`` micro-batches of ``x``, each loss weighted by its share of
    the batch, so the summed gradients are those of the batch's mean loss; returns that mean loss and the
    number correct against ``y`` (device tensors)."""
    total, correct = x.new_zeros((), dtype=torch.float32), y.new_zeros(())
    pieces = list(zip(x.chunk(accum_steps), y.chunk(accum_steps), target.chunk(accum_steps)))
    for i, (xi, yi, ti) in enumerate(pieces):
        # DDP averages the gradients over processes once, after the last micro-batch
        last = i == len(pieces) - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast(x.device, amp):
                logits = model(xi)
                loss = criterion(logits.float(), ti) * (len(xi) / len(x))
            loss.backward()
        total, correct = total + loss.detach(), correct + (logits.argmax(1) == yi).sum()
    return total, correct


def clip_gradients(optimizer: torch.optim.Optimizer, clip_grad: float, clip_mode: str) -> None:
    """Clip the gradients of the parameters ``optimizer`` steps: their global norm to ``clip_grad``, or
    each value with ``clip_mode="value"``."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if clip_mode == "value":
        nn.utils.clip_grad_value_(params, clip_grad)
    else:
        nn.utils.clip_grad_norm_(params, clip_grad)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Split, batch_size: int, amp: bool, channels_last: bool, rank: int = 0, world: int = 1
) -> Tensor:
    """Sums over this rank's share of ``data``: a float64 tensor (loss sum, correct, count). Plain cross entropy."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=data.images.device)
    idx_all = torch.arange(rank, len(data), world, device=data.images.device)
    for start in range(0, len(idx_all), batch_size):
        idx = idx_all[start : start + batch_size]
        x, y = normalize(data.images[idx], channels_last), data.labels[idx]
        with autocast(x.device, amp):
            logits = model(x).float()
        sums[0] += nn.functional.cross_entropy(logits, y, reduction="sum")
        sums[1] += (logits.argmax(1) == y).sum()
        sums[2] += len(idx)
    model.train(was_training)
    return sums


@dataclass
class Meter:
    """Running sums of one epoch on this rank; plain floats so a checkpoint can carry them."""

    loss_sum: float = 0.0
    correct: float = 0.0
    count: float = 0.0
    seconds: float = 0.0

    def state_dict(self) -> dict[str, float]:
        return asdict(self)

    def sums(self, device: torch.device) -> Tensor:
        """(loss sum, correct, count) as a float64 tensor, for summing over ranks without rounding."""
        return torch.tensor([self.loss_sum, self.correct, self.count], dtype=torch.float64, device=device)


class LossWatch:
    """Adds each step's loss to a :class:`Meter` one step late: reading the loss of the step before
    the one just queued checks it for NaN/inf every step without stalling the device pipeline.

    Args:
        meter: the epoch's running sums.
        epoch: 0-based epoch, for the error message.
        last_checkpoint: the checkpoint a diverged run can go back to (None: none saved yet).
    """

    def __init__(self, meter: Meter, epoch: int, last_checkpoint: object | None):
        self.meter, self.epoch, self.last_checkpoint = meter, epoch, last_checkpoint
        self.pending: tuple[Tensor, Tensor, int, int, Tensor | None] | None = None
        self.last_loss = math.nan
        self.stop_voted = False  # a stop vote read so far was positive

    @property
    def accuracy(self) -> float:
        return self.meter.correct / max(1.0, self.meter.count)

    def push(self, loss: Tensor, correct: Tensor, n: int, step: int, stop_vote: Tensor | None = None) -> None:
        """Queue this step's sums (and, with several processes, its stop vote) and read the previous step's."""
        previous, self.pending = self.pending, (loss, correct, n, step, stop_vote)
        if previous is not None:
            self._take(*previous)

    def flush(self) -> None:
        if self.pending is not None:
            self._take(*self.pending)
            self.pending = None

    def _take(self, loss: Tensor, correct: Tensor, n: int, step: int, stop_vote: Tensor | None) -> None:
        read = [loss.float(), correct.float()] + ([stop_vote.float()] if stop_vote is not None else [])
        value, right, *vote = torch.stack(read).tolist()  # the step's one sync
        self.stop_voted = self.stop_voted or bool(vote and vote[0] > 0)
        if not math.isfinite(value):
            where = f"at epoch {self.epoch + 1} step {step + 1}"  # 1-based, as epochs are
            raise diverged(f"the training loss became {value} {where}", self.last_checkpoint)
        self.meter.loss_sum += value * n
        self.meter.correct += right
        self.meter.count += n
        self.last_loss = value


def diverged(what: str, last_checkpoint: object | None) -> TrainingDiverged:
    """The error for a run that went non-finite: what happened where, and the checkpoint it can go back to."""
    if last_checkpoint is None:
        return TrainingDiverged(
            f"{what}; last good checkpoint: none (no epoch had finished); lower lr or change the recipe"
        )
    return TrainingDiverged(
        f"{what}; last good checkpoint: {last_checkpoint} (resuming it repeats the same steps: "
        "start a new run with a lower lr or another recipe)"
    )


@torch.no_grad()
def finite_state(model: nn.Module) -> bool:
    """Whether every floating-point parameter and buffer is finite (one device sync)."""
    sums = [t.float().sum() for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    return not sums or bool(torch.isfinite(torch.stack(sums)).all())
