"""The training loop: set up (or resume) a run, then for each epoch ``train_one_epoch``, ``evaluate``,
log and checkpoint.

The whole uint8 dataset sits on the device; every random number of a step (batch order, crops and
flips, drop path draws) is a function of (seed, epoch, step), so a run resumed from any step boundary
ends exactly where an uninterrupted one does (same device, same seed).
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..._weights import BEST_NAME, load_file, one_line
from ...layers import drop_path_from_kwargs, time_factor
from ...models import ZooModel
from ..config.overrides import quoted_override, resume_command
from ..config.schema import build_model, model_args, validate_config
from ..data.augment import build_policy, resolve_augment
from ..data.batches import EpochPlan, derive_seed, epoch_plan, train_batch
from ..data.cifar10 import Split, load_cifar10
from ..data.mixing import Mixing, build_mixing
from ..errors import CompileFailed, ConfigError, RunDirError
from ..rundir.atomic import remove_stale_temporaries
from ..rundir.checkpoint import (
    CHECKPOINT_NAME,
    init_weights,
    load_checkpoint,
    load_model_state,
    resumed_config,
    save_checkpoint,
    training_state,
)
from ..rundir.interrupt import StopAtOnce, StopOnSignal, TrainingInterrupted
from ..rundir.runlog import RunLog, versions
from . import distributed as dist
from .ema import EMA
from .optim import build_optimizer, sched_lr
from .precision import Precision, resolve_precision, restored_torch_flags
from .progress import Progress
from .step import LossWatch, Meter, diverged, evaluate, finite_state, train_step

log = logging.getLogger("train")
EVAL_BATCH = 1000
T = TypeVar("T")
COMPILER_MODULES = ("torch._dynamo", "torch._inductor")  # where torch.compile's errors are defined


@dataclass
class TrainState:
    """What a run carries from set-up to its summary; built by :func:`setup`."""

    cfg: DictConfig
    ctx: dist.Context
    run: RunLog
    net: ZooModel  # the model itself: its weights are saved, its drop path factor set
    model: nn.Module  # what a step calls: net, or its DDP and / or compiled wrapper
    eval_model: nn.Module  # not the DDP wrapper: ranks may run different numbers of eval batches
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    train_data: Split
    test_data: Split
    data_source: str
    amp: bool
    channels_last: bool
    precision_why: str  # how amp: auto was decided
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    start_step: int = 0
    meter: Meter = field(default_factory=Meter)  # the sums of the epoch under way when resumed mid-epoch
    saved_any: bool = False
    lr: float = 0.0
    compiled: set[Callable[..., Any]] = field(default_factory=set)  # compiled calls that ran once
    ema: EMA | None = None  # cfg.ema: the weights' moving average, evaluated beside them
    mixing: Mixing | None = None  # mixup / cutmix of each batch
    stop_voted: bool = False  # with several processes: a rank asked to stop (read with a step's loss)
    val_data: Split | None = None  # data.val_size: held-out training images, what best.pt is chosen on
    jobs_after: int = 0  # in a sweep: rounds of jobs still to run after this one (the progress's sweep eta)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.train_data) // self.cfg.batch_size)

    @property
    def ckpt_path(self) -> Path:
        return self.run.dir / CHECKPOINT_NAME


def train(cfg: DictConfig, run_dir: str | Path, overrides: tuple[str, ...] = (), jobs_after: int = 0) -> dict[str, Any]:
    """Run (or resume) the training ``cfg`` describes, writing into ``run_dir``; returns the summary.
    ``jobs_after``: in a sweep, the rounds of jobs that follow this one (their time joins the progress's eta)."""
    wall_start = time.perf_counter()
    with restored_torch_flags():  # a run is a library call too: the next code runs under its own flags
        s = setup(cfg, run_dir, overrides)
        s.jobs_after = jobs_after
        try:
            with StopOnSignal() as stop:
                for epoch in range(s.start_epoch, s.cfg.epochs):
                    meter = train_one_epoch(s, epoch, stop)
                    row = evaluate_epoch(s, epoch, meter)
                    s.history.append(row)
                    save_best(s)  # before last.pt: a resume from last.pt never lacks the best.pt it implies
                    save(s, epoch + 1, 0, Meter())
                    s.run.metrics(row)
                    log.info(epoch_line(row, s.cfg.epochs))
            summary = make_summary(s, time.perf_counter() - wall_start)
            s.run.summary(summary)
        except (TrainingInterrupted, KeyboardInterrupt):
            if s.run.outcome != "finished":  # (a Ctrl-C after the summary leaves a finished run finished)
                s.run.outcome = "interrupted"  # a resume continues the trackers' runs
            raise
        finally:
            s.run.close()
    return summary


def setup(cfg: DictConfig, run_dir: str | Path, overrides: tuple[str, ...] = ()) -> TrainState:
    """Check the config, join the processes, take the run dir and set up the run in it (:func:`build`);
    with ``cfg.resume``, continue that run in its own dir from its checkpoint."""
    saved = None
    if cfg.resume:
        with StopAtOnce("reading the checkpoint", "nothing was written yet"):
            saved = load_checkpoint(cfg.resume)
        cfg = resumed_config(cfg, saved, overrides)
        run_dir = Path(saved["path"]).parent
    cfg = validate_config(cfg)
    ctx = dist.setup(cfg.device)
    if cfg.batch_size < ctx.world:
        raise ConfigError(f"batch_size={cfg.batch_size} is smaller than the {ctx.world} processes sharing each batch")
    run = RunLog(run_dir, ctx.is_main)  # holds the run dir's lock from here
    try:
        with StopAtOnce("setting up the run", f"nothing was lost ({kept_checkpoint(run, saved)})"):
            return build(cfg, ctx, run, saved)
    except BaseException:
        run.close()
        raise


def build(cfg: DictConfig, ctx: dist.Context, run: RunLog, saved: dict[str, Any] | None) -> TrainState:
    """Load the data, build the model, optimizer, EMA and mixing, and restore a resumed run's state."""
    claim_run_dir(cfg, ctx, run, resumed=saved is not None)
    precision = device_settings(cfg, ctx.device)
    kept = f"{kept_checkpoint(run, saved)}; a data cache is written whole or not at all"
    with StopAtOnce("loading the data set", f"nothing was lost ({kept})"):
        train_data, test_data, source, val_data = load_data(cfg, ctx)
    net = build_net(cfg, ctx.device, precision.channels_last, resumed=saved is not None)
    optimizer = build_optimizer(cfg, net)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    model, eval_model = wrap(net, cfg.compile, ctx.world, unused_parameters(cfg, ctx.device))
    s = TrainState(
        cfg,
        ctx,
        run,
        net,
        model,
        eval_model,
        optimizer,
        criterion,
        train_data,
        test_data,
        source,
        precision.amp,
        precision.channels_last,
        precision.why,
        val_data=val_data,
    )
    s.ema = EMA(net, cfg.ema_decay) if cfg.ema else None
    s.mixing = build_mixing(cfg.mixup_alpha, cfg.cutmix_alpha)
    if saved is not None:
        restore(s, saved)
    elif cfg.overwrite:
        run.forget_records()  # the run replaced: none of its files may be read as this run's
    open_records(s)
    log_setup(s, precision)
    return s


def kept_checkpoint(run: RunLog, saved: dict[str, Any] | None) -> str:
    return f"{run.dir / CHECKPOINT_NAME} is as it was" if saved else "no checkpoint was due yet"


def claim_run_dir(cfg: DictConfig, ctx: dist.Context, run: RunLog, resumed: bool) -> None:
    """On rank 0, clear the temporaries of a save killed mid-write (never read), and refuse to start a new
    run in a dir that holds one unless ``overwrite`` says to replace it."""
    if not ctx.is_main:
        return
    for name in (CHECKPOINT_NAME, BEST_NAME):
        remove_stale_temporaries(run.dir / name)
    if not resumed and (run.dir / CHECKPOINT_NAME).exists() and not cfg.overwrite:
        raise RunDirError(
            f"{run.dir} already holds a run; continue it with {quoted_override('resume', run.dir)}, "
            "pick another hydra.run.dir, or add overwrite=true to replace it"
        )


def build_net(cfg: DictConfig, device: torch.device, channels_last: bool, resumed: bool) -> ZooModel:
    """The model, initialized from ``cfg.seed`` (a new run with ``init_from``: from that run's weights),
    on ``device`` in the memory format the run uses."""
    torch.manual_seed(cfg.seed)  # initialization
    net = build_model(cfg)
    if cfg.init_from and not resumed:  # a resumed run has its own weights
        start_from(net, cfg.init_from)
    return net.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)


def open_records(s: TrainState) -> None:
    """Write the run's config, and start its metrics and loggers from the history it has so far."""
    s.run.config(s.cfg)
    s.run.restart_metrics(s.history)
    s.run.open_loggers(s.cfg, s.history)


def log_setup(s: TrainState, precision: Precision) -> None:
    """One log line with what the run trains: the model's size, the splits, the steps, the device."""
    log.info(
        "%s: %.2fM params, %d train / %d validation / %d test images, %d steps/epoch, %s x%d, %s",
        s.cfg.model.name,
        sum(p.numel() for p in s.net.parameters()) / 1e6,
        len(s.train_data),
        len(s.val_data) if s.val_data else 0,
        len(s.test_data),
        s.steps_per_epoch,
        s.ctx.device,
        s.ctx.world,
        precision.describe(),
    )


def start_from(net: nn.Module, source: str) -> None:
    """init_from: a trained run's weights as the new run's initialisation, said in the log."""
    fresh = init_weights(net, source)
    head = f"; the classifier ({', '.join(fresh)}) is of another size and starts fresh" if fresh else ""
    log.info("weights from %s%s", source, head)


def device_settings(cfg: DictConfig, device: torch.device) -> Precision:
    """bf16 autocast and channels_last for this device (:func:`resolve_precision`); on CUDA, cuDNN's
    autotuner, or with ``deterministic`` the deterministic kernels a resume needs to end bit for bit
    where an uninterrupted run does (the CPU kernels are deterministic as they are)."""
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    torch.use_deterministic_algorithms(bool(cfg.deterministic), warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.deterministic
        torch.backends.cudnn.deterministic = bool(cfg.deterministic)
        torch.set_float32_matmul_precision("high")
    return resolve_precision(cfg.amp, cfg.channels_last, device)


def load_data(cfg: DictConfig, ctx: dist.Context) -> tuple[Split, Split, str, Split | None]:
    """The train, test (and validation) splits on the training device. Rank 0 decodes (and caches)
    first, so N processes do not decode the same archive at once."""
    if not ctx.is_main:
        dist.barrier()
    data = load_cifar10(cfg.data)
    if ctx.is_main:
        dist.barrier()
    val = data.val.to(ctx.device) if data.val is not None else None
    return data.train.to(ctx.device), data.test.to(ctx.device), data.source, val


def unused_parameters(cfg: DictConfig, device: torch.device) -> bool:
    """Whether DDP must look for parameters without gradients each step (a cost): where a block's drop
    path can drop a whole batch (:meth:`zoo.layers.DropPathArgs.can_drop_whole_batch`)."""
    drop_path = drop_path_from_kwargs(model_args(cfg))["drop_path"]
    rate = max(cfg.drop_path_rates or [cfg.drop_path_rate])
    return drop_path.with_rate(rate).can_drop_whole_batch(device, bool(cfg.compile))


def wrap(
    net: nn.Module, compile: bool | str, world: int, unused_parameters: bool = False
) -> tuple[nn.Module, nn.Module]:
    """What a training step and an evaluation call: DistributedDataParallel across processes, and
    torch.compile in the mode asked for (``True``: the default mode)."""
    model = nn.parallel.DistributedDataParallel(net, find_unused_parameters=unused_parameters) if world > 1 else net
    eval_model: nn.Module = net
    if compile:
        mode = None if compile in (True, "default") else compile
        model = torch.compile(model, mode=mode)
        eval_model = torch.compile(net, mode=mode) if world > 1 else model
    return model, eval_model


def restore(s: TrainState, saved: dict[str, Any]) -> None:
    """Put a checkpoint's weights, optimizer state, history and position into a freshly set-up run."""
    load_model_state(s.net, saved)
    s.optimizer.load_state_dict(saved["optimizer"])
    if s.ema is not None and saved.get("ema") is not None:
        s.ema.load_state_dict(saved["ema"])
    s.history, s.start_epoch, s.start_step = saved["history"], saved["epoch"], saved["step"]
    if s.ctx.is_main:  # the saved sums are over all ranks already
        s.meter = Meter(**saved["meter"])
    s.saved_any = True
    torch.set_rng_state(saved["rng"]["torch"])  # (each step reseeds from (seed, epoch, step) anyway)
    log.info("resuming %s %s", saved["path"], where(s.start_epoch, s.start_step, s.steps_per_epoch))


def train_one_epoch(s: TrainState, epoch: int, stop: StopOnSignal) -> Meter:
    """The steps of ``epoch`` (from the resumed step, in the epoch a run resumes in); stops at a step
    boundary, saved, when a signal arrived. Returns the epoch's running sums on this rank."""
    cfg, ctx, steps = s.cfg, s.ctx, s.steps_per_epoch
    first, meter = (s.start_step, s.meter) if epoch == s.start_epoch else (0, Meter())
    plan = plan_epoch(s, epoch)
    watch = LossWatch(meter, epoch, s.ckpt_path if s.saved_any else None)
    progress = Progress(epoch, cfg.epochs, first, steps, cfg.log_every_s, ctx.is_main, s.jobs_after)
    start = time.perf_counter()
    try:  # the bar is closed (its line cleared) before any message about how the epoch ended
        for step in range(first, steps):
            # one process stops at once; several stop together, at the step after the loss read that
            # brought the vote of every rank (one step late, as the loss check is)
            if s.stop_voted or (ctx.world == 1 and stop.requested):
                watch.flush()
                meter.seconds += time.perf_counter() - start
                progress.close()
                save(s, epoch, step, meter)
                raise interrupted(s, stop, epoch, step)
            loss, correct, n = take_step(s, plan, epoch, step)
            vote = dist.stop_vote(stop.requested, ctx.device) if ctx.world > 1 else None
            watch.push(loss, correct, n, step, vote)  # checks the previous step's loss, without a sync now
            s.stop_voted = watch.stop_voted
            steps_left = (cfg.epochs - epoch) * steps - step - 1
            progress.update(step, watch.last_loss, watch.accuracy, cfg.batch_size, steps_left)
        watch.flush()
        s.stop_voted = watch.stop_voted  # the last step's vote: the next epoch stops before its first step
    finally:
        progress.close()
    meter.seconds += time.perf_counter() - start
    return meter


def take_step(s: TrainState, plan: EpochPlan, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Step ``step`` of ``epoch``: the drop path factor of its point in time, its seeded draws, its batch
    (mixed), its learning rate, then :func:`train_step` and the EMA update. Returns the batch's mean loss
    and number correct (device tensors, not read yet) and its size."""
    cfg, ctx, steps = s.cfg, s.ctx, s.steps_per_epoch
    global_step = epoch * steps + step
    s.net.set_drop_path_factor(
        time_factor(
            cfg.drop_path_time_schedule,
            global_step / steps,
            cfg.drop_path_time_cutoff,
            cfg.drop_path_time_early_mode,
        )
    )
    torch.manual_seed(derive_seed(cfg.seed, "drop", epoch, step, ctx.rank))  # drop path and mixing draws
    x, y = train_batch(s.train_data, plan, step, ctx.rank, ctx.world, s.channels_last)
    x, target = s.mixing(x, y) if s.mixing else (x, y)
    s.lr = sched_lr(cfg, global_step, cfg.epochs * steps, steps)
    loss, correct = first_compiled_call(
        s,
        train_step,
        s.model,
        s.optimizer,
        s.criterion,
        x,
        y,
        s.lr,
        s.amp,
        target,
        cfg.accum_steps,
        cfg.clip_grad,
        cfg.clip_mode,
    )
    if s.ema is not None:
        s.ema.update_parameters(s.net)
    return loss, correct, len(y)


def plan_epoch(s: TrainState, epoch: int) -> EpochPlan:
    """The epoch's order and augmentation (:func:`epoch_plan`) under the config's data.augment keys."""
    data = s.cfg.data
    policy = build_policy(data.augment, data.randaugment_n, data.randaugment_m, data.random_erasing)
    crop = resolve_augment(data.augment) != "none"
    return epoch_plan(len(s.train_data), s.cfg.batch_size, s.cfg.seed, epoch, s.ctx.device, crop, policy)


def first_compiled_call(s: TrainState, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``; the first training step and the first evaluation of a compiled model are where
    torch.compile compiles, so an error there becomes one line that names the model and the mode."""
    if not s.cfg.compile or fn in s.compiled:
        return fn(*args)
    try:
        out = fn(*args)
    except Exception as e:
        if not type(e).__module__.startswith(COMPILER_MODULES):  # the model's own error, not the compiler's
            raise
        raise CompileFailed(
            f"torch.compile failed on {s.cfg.model.name} with drop_path_mode={s.cfg.drop_path_mode} "
            f"({one_line(e, 300)}); compile=false runs it without compiling"
        ) from None
    s.compiled.add(fn)
    return out


def where(epoch: int, steps_done: int, steps: int) -> str:
    """A step boundary in words, 1-based as epochs are: "after epoch 2", "in epoch 3 after step 5 of 12"."""
    if steps_done == 0:
        return "before the first step" if epoch == 0 else f"after epoch {epoch}"
    return f"in epoch {epoch + 1} after step {steps_done} of {steps}"


def save(s: TrainState, epoch: int, step: int, meter: Meter) -> None:
    """Save last.pt at a step boundary (rank 0): ``epoch`` epochs and ``step`` steps of the next done,
    with the epoch's running sums over all ranks. Non-finite weights (a blow-up in the step after the
    last checked loss) never replace a good last.pt."""
    if not finite_state(s.net):
        where_now = where(epoch, step, s.steps_per_epoch)
        raise diverged(f"the weights became non-finite {where_now}", s.ckpt_path if s.saved_any else None)
    sums = dist.all_sum(meter.sums(s.ctx.device))
    if s.ctx.is_main:
        summed = Meter(*sums.tolist(), seconds=meter.seconds)
        config = OmegaConf.to_container(s.cfg, resolve=True)
        state = training_state(s.net, s.optimizer, config, epoch, step, s.steps_per_epoch, summed, s.history)
        state["ema"] = s.ema.state_dict() if s.ema is not None else None
        save_checkpoint(state, s.ckpt_path)
    dist.barrier()
    s.saved_any = True


def interrupted(s: TrainState, stop: StopOnSignal, epoch: int, step: int) -> TrainingInterrupted:
    signum = stop.signum or signal.SIGTERM  # None: another rank was signalled
    return TrainingInterrupted(
        f"{signal.Signals(signum).name} {where(epoch, step, s.steps_per_epoch)}; saved {s.ckpt_path}; "
        f"continue with: {resume_command(s.run.dir.resolve())}",
        signum,
    )


def tests_after(cfg: DictConfig, epoch: int) -> bool:
    """Whether the test split is evaluated after ``epoch`` (0-based): every ``test_every`` epochs and
    always after the last (``test_every: 0``: the last only, where a pass over it costs a run's time)."""
    return epoch + 1 == cfg.epochs or (cfg.test_every > 0 and (epoch + 1) % cfg.test_every == 0)


def evaluate_epoch(s: TrainState, epoch: int, meter: Meter) -> dict[str, Any]:
    """The metrics.jsonl line of a finished epoch: its training sums and the test split's (and the
    validation split's), summed over ranks (and, with EMA, the averaged weights' test loss and accuracy).
    An epoch :func:`tests_after` skips has no test keys."""
    start = time.perf_counter()
    test = ema = None
    if tests_after(s.cfg, epoch):
        test = dist.all_sum(
            first_compiled_call(
                s, evaluate, s.eval_model, s.test_data, EVAL_BATCH, s.amp, s.channels_last, s.ctx.rank, s.ctx.world
            )
        ).tolist()
        if s.ema is not None:
            ema = dist.all_sum(
                evaluate(s.ema, s.test_data, EVAL_BATCH, s.amp, s.channels_last, s.ctx.rank, s.ctx.world)
            ).tolist()
    val = None
    if s.val_data is not None:
        val = dist.all_sum(
            evaluate(s.eval_model, s.val_data, EVAL_BATCH, s.amp, s.channels_last, s.ctx.rank, s.ctx.world)
        ).tolist()
    row = epoch_row(s, epoch, meter, time.perf_counter() - start)
    for prefix, sums in (("test", test), ("val", val), ("ema_test", ema)):
        if sums is not None:
            row.update({f"{prefix}_loss": sums[0] / sums[2], f"{prefix}_acc": sums[1] / sums[2]})
    return row


def epoch_row(s: TrainState, epoch: int, meter: Meter, eval_seconds: float) -> dict[str, Any]:
    """The metrics line's training keys, from the epoch's sums over ranks."""
    train_sums = dist.all_sum(meter.sums(s.ctx.device)).tolist()
    return {
        "epoch": epoch + 1,
        "train_loss": train_sums[0] / train_sums[2],
        "train_acc": train_sums[1] / train_sums[2],
        "lr": s.lr,
        "drop_path_rate": max(s.net.drop_path_rates(), default=0.0),
        "epoch_seconds": meter.seconds + eval_seconds,
        "images_per_second": train_sums[2] / max(meter.seconds, 1e-9),
    }


def best_val_epoch(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The metrics line of the epoch with the highest validation accuracy (ties: the earliest); None
    without a validation split."""
    rows = [r for r in history if "val_acc" in r]
    return max(rows, key=lambda r: r["val_acc"]) if rows else None  # max keeps the first of equals


def save_best(s: TrainState) -> None:
    """Write best.pt (rank 0) when the epoch just finished is the best validation epoch so far: its
    weights (and EMA), config and metrics line, a file :func:`zoo.load_run` reads with ``which="best"``."""
    best = best_val_epoch(s.history)
    if best is None or best is not s.history[-1] or not s.ctx.is_main:
        return
    if not finite_state(s.net):  # never kept as the best: save() raises the divergence error next
        return
    config = OmegaConf.to_container(s.cfg, resolve=True)
    save_checkpoint(
        {
            "model": s.net.state_dict(),
            "ema": s.ema.state_dict() if s.ema is not None else None,
            "model_name": config["model"]["name"],
            "model_args": s.net.model_args,  # what rebuilds the model (zoo.load_run), as in last.pt
            "config": config,
            "epoch": best["epoch"],
            "metrics": dict(best),
        },
        s.run.dir / BEST_NAME,
    )


def selection_summary(s: TrainState) -> dict[str, Any]:
    """summary.json's selection keys: ``best_test_acc``, the highest test accuracy of any tested epoch
    (chosen on the test set: a record, not a result); with a validation split, the best validation
    epoch, its validation accuracy and the test accuracy at that epoch (chosen without looking at the
    test set), from its metrics line, or from best.pt's weights where ``test_every`` skipped that epoch."""
    history = s.history
    out: dict[str, Any] = {"best_test_acc": max(r["test_acc"] for r in history if "test_acc" in r)}
    best = best_val_epoch(history)
    if best is not None:
        at_best = best["test_acc"] if "test_acc" in best else test_acc_of_best(s)
        out.update(best_val_epoch=best["epoch"], best_val_acc=best["val_acc"], test_acc_at_best_val=at_best)
    return out


def test_acc_of_best(s: TrainState) -> float:
    """The test accuracy of best.pt's weights: rank 0 reads the file it wrote and hands the weights to the
    other ranks (their run dir is not rank 0's: they write no files)."""
    model = copy.deepcopy(s.net)
    if s.ctx.is_main:
        load_model_state(model, load_file(s.run.dir / BEST_NAME))
    dist.broadcast_module(model)
    _, correct, count = dist.all_sum(
        evaluate(model, s.test_data, EVAL_BATCH, s.amp, s.channels_last, s.ctx.rank, s.ctx.world)
    ).tolist()
    return correct / count


def drop_path_summary(cfg: DictConfig) -> dict[str, Any]:
    """The rates the run was built with: its list of per-block rates where it gave one (the rate and the
    schedule then did nothing), else the largest rate and its schedule over depth."""
    if cfg.drop_path_rates is not None:
        return {"drop_path_rates": [float(r) for r in cfg.drop_path_rates]}
    return {"drop_path_rate": cfg.drop_path_rate, "drop_path_schedule": cfg.drop_path_schedule}


def make_summary(s: TrainState, wall_seconds: float) -> dict[str, Any]:
    cfg, history = s.cfg, s.history
    cuda = s.ctx.device.type == "cuda"
    return {
        "model": cfg.model.name,
        "final_test_acc": history[-1]["test_acc"],
        **selection_summary(s),
        **({"final_ema_test_acc": history[-1]["ema_test_acc"]} if "ema_test_acc" in history[-1] else {}),
        "params": sum(p.numel() for p in s.net.parameters()),
        "total_seconds": sum(r["epoch_seconds"] for r in history),
        "wall_seconds_last_invocation": wall_seconds,
        "device": s.ctx.device.type,
        "device_name": torch.cuda.get_device_name(s.ctx.device) if cuda else "cpu",
        "world_size": s.ctx.world,
        "versions": versions(),
        **drop_path_summary(cfg),
        "drop_path_mode": cfg.drop_path_mode,
        "drop_path_time_schedule": cfg.drop_path_time_schedule,
        "amp": "bf16" if s.amp else "off",
        "channels_last": s.channels_last,
        "precision_choice": s.precision_why,
        "compile": cfg.compile,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "images_per_second": history[-1]["images_per_second"],
        "data": s.data_source,
        "train_images": len(s.train_data),
        "val_images": len(s.val_data) if s.val_data is not None else 0,
        "test_images": len(s.test_data),
    }


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    return (
        f"epoch {row['epoch']}/{epochs}  train_loss {row['train_loss']:.4f}  train_acc {row['train_acc']:.4f}  "
        + (f"val_acc {row['val_acc']:.4f}  " if "val_acc" in row else "")
        + (f"test_loss {row['test_loss']:.4f}  test_acc {row['test_acc']:.4f}  " if "test_acc" in row else "")
        + f"lr {row['lr']:.4g}  "
        f"drop_path {row['drop_path_rate']:.3f}  {row['epoch_seconds']:.1f}s  {row['images_per_second']:.0f} img/s"
    )
