"""The pieces of the training loop: model and optimizer from a config, the learning-rate schedule as a
pure function of the step, seeds derived from (seed, epoch, step), one train step and one evaluation."""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from ._registry import create_model
from .augment import augment_params, crop_flip, normalize
from .data import Split
from .errors import ConfigError, TrainingDiverged

# Keys of the model group that select the model rather than configure it.
_MODEL_SELECT_KEYS = ("name",)


def build_model(cfg: DictConfig, num_classes: int = 10) -> nn.Module:
    """``zoo.create_model`` with the top-level drop path keys and every other key of the model group."""
    model_args = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k not in _MODEL_SELECT_KEYS}
    try:
        return create_model(
            cfg.model.name,
            num_classes=num_classes,
            drop_path_rate=cfg.drop_path_rate,
            drop_path_schedule=cfg.drop_path_schedule,
            drop_path_mode=cfg.drop_path_mode,
            **model_args,
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model {cfg.model.name} cannot be built from the config: {e}") from None


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of values: the same parts always give the same seed."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator(*parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


def lr_at(
    step: int,
    total_steps: int,
    base_lr: float,
    schedule: str = "cosine",
    warmup_steps: int = 0,
    min_lr: float = 0.0,
    milestones: Sequence[float] = (0.5, 0.75),
    gamma: float = 0.1,
) -> float:
    """The learning rate for optimizer step ``step`` (0-based) of ``total_steps``.

    A linear warmup from ``base_lr / warmup_steps`` to ``base_lr`` over ``warmup_steps``, then
    ``"cosine"``: half a cosine from ``base_lr`` towards ``min_lr`` (reached one step after the last), or
    ``"step"``: ``base_lr`` times ``gamma`` for each milestone (a fraction of ``total_steps``) passed,
    the paper's /10 at 50 % and 75 % of training.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if schedule == "step":
        return base_lr * gamma ** sum(step >= round(m * total_steps) for m in milestones)
    raise ConfigError(f"sched.name must be cosine or step, got {schedule!r}")


def sched_lr(cfg: DictConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    s = cfg.sched
    return lr_at(
        step,
        total_steps,
        cfg.lr,
        s.name,
        warmup_steps=round(s.get("warmup_epochs", 0) * steps_per_epoch),
        min_lr=cfg.lr * s.get("min_lr_ratio", 0.0),
        milestones=tuple(s.get("milestones", (0.5, 0.75))),
        gamma=s.get("gamma", 0.1),
    )


def build_optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW; biases, norms and scales (1-d parameters) get no weight decay, as in timm."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=o.momentum, nesterov=o.nesterov)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(o.betas), eps=o.eps)
    raise ConfigError(f"optim.name must be sgd or adamw, got {o.name!r}")


@dataclass
class Meter:
    """Running sums of one epoch on this rank; plain floats so a checkpoint can carry them."""

    loss_sum: float = 0.0
    correct: float = 0.0
    count: float = 0.0
    seconds: float = 0.0

    def state_dict(self) -> dict[str, float]:
        return asdict(self)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> tuple[Tensor, int]:
    """This epoch's permutation of ``n`` images and its number of full batches (at least one)."""
    perm = torch.randperm(n, generator=generator(seed, "perm", epoch))
    return perm, max(1, n // batch_size)


def train_batch(
    data: Split, perm: Tensor, step: int, batch_size: int, seed: int, epoch: int, rank: int, world: int, channels_last: bool
) -> tuple[Tensor, Tensor]:
    """This rank's share of global batch ``step``: indices and augmentation drawn for the whole batch, so
    one process or N processes see the same images and the same crops."""
    idx = perm[step * batch_size : (step + 1) * batch_size]
    params = augment_params(len(idx), generator(seed, "aug", epoch, step))
    idx, params = idx[rank::world].to(data.images.device), params[:, rank::world].to(data.images.device)
    images = crop_flip(data.images[idx], params)
    return normalize(images, channels_last), data.labels[idx]


def autocast(device: torch.device, enabled: bool):
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
) -> tuple[Tensor, Tensor]:
    """One SGD/AdamW step at learning rate ``lr``; returns the loss and the number correct (device tensors, no sync)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast(x.device, amp):
        logits = model(x)
        loss = criterion(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), (logits.argmax(1) == y).sum()


@torch.no_grad()
def evaluate(model: nn.Module, data: Split, batch_size: int, amp: bool, channels_last: bool, rank: int = 0, world: int = 1) -> Tensor:
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
        self.pending: tuple[Tensor, Tensor, int, int] | None = None
        self.last_loss = math.nan

    @property
    def accuracy(self) -> float:
        return self.meter.correct / max(1.0, self.meter.count)

    def push(self, loss: Tensor, correct: Tensor, n: int, step: int) -> None:
        previous, self.pending = self.pending, (loss, correct, n, step)
        if previous is not None:
            self._take(*previous)

    def flush(self) -> None:
        if self.pending is not None:
            self._take(*self.pending)
            self.pending = None

    def _take(self, loss: Tensor, correct: Tensor, n: int, step: int) -> None:
        value = loss.item()
        if not math.isfinite(value):
            raise diverged(f"the training loss became {value} at epoch {self.epoch + 1} step {step}", self.last_checkpoint)
        self.meter.loss_sum += value * n
        self.meter.correct += float(correct.item())
        self.meter.count += n
        self.last_loss = value


def diverged(what: str, last_checkpoint: object | None) -> TrainingDiverged:
    """The error for a run that went non-finite: what happened where, and the checkpoint it can go back to."""
    if last_checkpoint is None:
        return TrainingDiverged(f"{what}; last good checkpoint: none (no epoch had finished); lower lr or change the recipe")
    return TrainingDiverged(
        f"{what}; last good checkpoint: {last_checkpoint} (resuming it repeats the same steps: "
        "start a new run with a lower lr or another recipe)"
    )


@torch.no_grad()
def finite_state(model: nn.Module) -> bool:
    """Whether every floating-point parameter and buffer is finite (one device sync)."""
    sums = [t.float().sum() for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    return not sums or bool(torch.isfinite(torch.stack(sums)).all())
