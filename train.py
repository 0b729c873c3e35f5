"""Train a zoo model on CIFAR-10.

    python train.py model=resnet20 drop_path_rate=0.1 data=cifar10_folder data.path=<dir or .tar.gz>
    python train.py experiment=cpu_smoke data=cifar10_folder data.path=...      # < 1 minute on a CPU
    python train.py resume=outputs/2026-11-26/10-00-00_resnet20                 # continue that run
    torchrun --nproc_per_node=2 train.py ...                                     # DistributedDataParallel

Everything a run produces lands in its Hydra output dir: config.yaml, metrics.jsonl (one line per
epoch), summary.json and last.pt. The whole uint8 dataset sits on the device; crops and flips are
batched tensor ops drawn from (seed, epoch, step), so an interrupted run resumed from any step
boundary ends exactly where an uninterrupted one does (same device, same seed).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from zoo import distributed as dist
from zoo.checkpoint import CHECKPOINT_NAME, load_checkpoint, load_model_state, resumed_config, save_checkpoint, training_state
from zoo.data import load_cifar10
from zoo.engine import LossWatch, Meter, build_model, build_optimizer, derive_seed, diverged, epoch_batches, evaluate
from zoo.engine import finite_state, sched_lr, train_batch, train_step
from zoo.errors import ConfigError, ZooError
from zoo.interrupt import StopOnSignal, TrainingInterrupted
from zoo.layers import set_block_drop_path_rates
from zoo.malloc import retain_freed_memory
from zoo.runlog import RunLog, versions
from zoo.time_schedules import time_factor
from zoo.validate import validate_config

log = logging.getLogger("train")
EVAL_BATCH = 1000


def train(cfg: DictConfig, run_dir: str | Path, overrides: tuple[str, ...] = ()) -> dict:
    """Run (or resume) the training ``cfg`` describes, writing into ``run_dir``; returns the summary."""
    wall_start = time.perf_counter()
    state = None
    if cfg.resume:
        state = load_checkpoint(cfg.resume)
        cfg = resumed_config(cfg, state, overrides)
        run_dir = Path(state["path"]).parent  # a resumed run continues in its own dir
    validate_config(cfg)
    malloc = retain_freed_memory() if cfg.retain_freed_memory else "glibc defaults"
    ctx = dist.setup(cfg.device)
    if cfg.batch_size < ctx.world:
        raise ConfigError(f"batch_size={cfg.batch_size} is smaller than the {ctx.world} processes sharing each batch")
    run = RunLog(run_dir, ctx.is_main)
    if state is None and (run.dir / CHECKPOINT_NAME).exists() and ctx.is_main:
        raise ConfigError(f"{run.dir} already holds a run; continue it with resume={run.dir} or pick another hydra.run.dir")
    cuda = ctx.device.type == "cuda"
    amp = cuda if cfg.amp == "auto" else bool(cfg.amp)
    channels_last = cuda if cfg.channels_last == "auto" else bool(cfg.channels_last)
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")

    # Rank 0 decodes (and caches) first, so N processes do not decode the same archive at once.
    if not ctx.is_main:
        dist.barrier()
    data = load_cifar10(cfg.data)
    if ctx.is_main:
        dist.barrier()
    train_data, test_data = data.train.to(ctx.device), data.test.to(ctx.device)

    torch.manual_seed(cfg.seed)  # initialization
    net = build_model(cfg).to(ctx.device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    base_rates = net.drop_path_rates()  # the depth schedule; time schedules scale it
    optimizer = build_optimizer(cfg, net)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    history, start_epoch, start_step, meter = [], 0, 0, Meter()
    if state is not None:
        load_model_state(net, state)
        optimizer.load_state_dict(state["optimizer"])
        history, start_epoch, start_step = state["history"], state["epoch"], state["step"]
        if ctx.is_main:  # the saved sums are over all ranks already
            meter = Meter(**state["meter"])
        torch.set_rng_state(state["rng"]["torch"])  # (each step reseeds from (seed, epoch, step) anyway)
        log.info("resuming %s at epoch %d step %d", state["path"], start_epoch + 1, start_step)
    run.config(cfg)
    run.restart_metrics(history)
    model = torch.nn.parallel.DistributedDataParallel(net) if ctx.world > 1 else net
    eval_model = net  # not the DDP wrapper: ranks may run different numbers of eval batches
    if cfg.compile:
        model = torch.compile(model)
        eval_model = torch.compile(net) if ctx.world > 1 else model

    steps_per_epoch = max(1, len(train_data) // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    params = sum(p.numel() for p in net.parameters())
    log.info(
        "%s: %.2fM params, %d train / %d test images, %d steps/epoch, %s x%d, amp=%s, malloc=%s",
        cfg.model.name, params / 1e6, len(train_data), len(test_data), steps_per_epoch, ctx.device, ctx.world, amp,
        malloc,
    )
    ckpt_path = run.dir / CHECKPOINT_NAME
    saved_any = state is not None
    cfg_container = OmegaConf.to_container(cfg, resolve=True)

    def checkpoint(epoch: int, step: int, meter: Meter) -> None:
        """Save last.pt at a step boundary (rank 0), with the epoch's running sums over all ranks.
        Non-finite weights (a blow-up in the step after the last checked loss) never replace a good last.pt."""
        if not finite_state(net):
            where = f"after epoch {epoch}" if step == 0 else f"at epoch {epoch + 1} step {step}"
            raise diverged(f"the weights became non-finite {where}", ckpt_path if saved_any else None)
        sums = dist.all_sum(torch.tensor([meter.loss_sum, meter.correct, meter.count], device=ctx.device))
        if ctx.is_main:
            summed = Meter(*sums.tolist(), seconds=meter.seconds)
            save_checkpoint(training_state(net, optimizer, cfg_container, epoch, step, steps_per_epoch, summed, history),
                            ckpt_path)
        dist.barrier()

    factor = None
    with StopOnSignal() as stop:
        for epoch in range(start_epoch, cfg.epochs):
            if epoch != start_epoch:
                meter, start_step = Meter(), 0
            perm, _ = epoch_batches(len(train_data), cfg.batch_size, cfg.seed, epoch)
            watch = LossWatch(meter, epoch, ckpt_path if saved_any else None)
            bar = tqdm(total=steps_per_epoch, initial=start_step, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       disable=None if ctx.is_main else True, leave=False, dynamic_ncols=True)
            segment_start = time.perf_counter()
            for step in range(start_step, steps_per_epoch):
                if dist.any_rank(stop.requested, ctx.device):
                    watch.flush()
                    meter.seconds += time.perf_counter() - segment_start
                    checkpoint(epoch, step, meter)
                    signum = stop.signum or signal.SIGTERM  # None: another rank was signalled
                    raise TrainingInterrupted(
                        f"{signal.Signals(signum).name} at epoch {epoch + 1} step {step}; saved {ckpt_path}; "
                        f"continue with: python train.py resume={run.dir}",
                        signum,
                    )
                global_step = epoch * steps_per_epoch + step
                new_factor = time_factor(cfg.drop_path_time_schedule, global_step / steps_per_epoch,
                                         cfg.drop_path_time_cutoff, cfg.drop_path_time_early_mode)
                if new_factor != factor:  # only touch the blocks when the schedule moves
                    factor = new_factor
                    set_block_drop_path_rates(net, [r * factor for r in base_rates])
                torch.manual_seed(derive_seed(cfg.seed, "drop", epoch, step, ctx.rank))  # drop masks
                x, y = train_batch(train_data, perm, step, cfg.batch_size, cfg.seed, epoch, ctx.rank, ctx.world, channels_last)
                lr = sched_lr(cfg, global_step, total_steps, steps_per_epoch)
                loss, correct = train_step(model, optimizer, criterion, x, y, lr, amp)
                watch.push(loss, correct, len(y), step)  # checks the previous step's loss, without a sync now
                bar.update()
                if step % 20 == 0 or step == steps_per_epoch - 1:
                    per_step = (time.perf_counter() - segment_start) / (step + 1 - start_step)
                    bar.set_postfix(loss=f"{watch.last_loss:.3f}", acc=f"{watch.accuracy:.3f}",
                                    img_s=f"{cfg.batch_size / per_step:.0f}",
                                    run_eta=_hms((total_steps - global_step - 1) * per_step), refresh=False)
            watch.flush()
            bar.close()
            meter.seconds += time.perf_counter() - segment_start
            train_sums = dist.all_sum(torch.tensor([meter.loss_sum, meter.correct, meter.count], device=ctx.device))
            eval_start = time.perf_counter()
            test_sums = dist.all_sum(evaluate(eval_model, test_data, EVAL_BATCH, amp, channels_last, ctx.rank, ctx.world))
            row = {
                "epoch": epoch + 1,
                "train_loss": train_sums[0].item() / train_sums[2].item(),
                "train_acc": train_sums[1].item() / train_sums[2].item(),
                "test_loss": test_sums[0].item() / test_sums[2].item(),
                "test_acc": test_sums[1].item() / test_sums[2].item(),
                "lr": lr,
                "drop_path_rate": max([r * factor for r in base_rates], default=0.0),
                "epoch_seconds": meter.seconds + time.perf_counter() - eval_start,
                "images_per_second": train_sums[2].item() / max(meter.seconds, 1e-9),
            }
            history.append(row)
            checkpoint(epoch + 1, 0, Meter())
            saved_any = True
            run.metrics(row)
            log.info(_epoch_line(row, cfg.epochs))

    summary = {
        "model": cfg.model.name,
        "final_test_acc": history[-1]["test_acc"],
        "best_test_acc": max(r["test_acc"] for r in history),
        "params": params,
        "total_seconds": sum(r["epoch_seconds"] for r in history),
        "wall_seconds_last_invocation": time.perf_counter() - wall_start,
        "device": ctx.device.type,
        "device_name": torch.cuda.get_device_name(ctx.device) if cuda else "cpu",
        "world_size": ctx.world,
        "versions": versions(),
        "drop_path_rate": cfg.drop_path_rate,
        "drop_path_schedule": cfg.drop_path_schedule,
        "drop_path_mode": cfg.drop_path_mode,
        "drop_path_time_schedule": cfg.drop_path_time_schedule,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "images_per_second": history[-1]["images_per_second"],
        "data": data.source,
        "train_images": len(train_data),
        "test_images": len(test_data),
    }
    run.summary(summary)
    return summary


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _epoch_line(row: dict, epochs: int) -> str:
    return (
        f"epoch {row['epoch']}/{epochs}  train_loss {row['train_loss']:.4f}  train_acc {row['train_acc']:.4f}  "
        f"test_loss {row['test_loss']:.4f}  test_acc {row['test_acc']:.4f}  lr {row['lr']:.4g}  "
        f"drop_path {row['drop_path_rate']:.3f}  {row['epoch_seconds']:.1f}s  {row['images_per_second']:.0f} img/s"
    )


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    try:
        s = train(cfg, hc.runtime.output_dir, tuple(hc.overrides.task))
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except TrainingInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:  # Ctrl-C before the loop's handler is set, or a second Ctrl-C inside it
        print("interrupted: stopped at once by Ctrl-C; the last checkpoint saved (if any) is intact", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    finally:
        dist.cleanup()
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"done: {s['model']} test_acc={s['final_test_acc']:.4f} best={s['best_test_acc']:.4f} "
            f"epochs={s['epochs']} in {s['wall_seconds_last_invocation']:.1f}s ({s['device']}"
            f"{' x' + str(s['world_size']) if s['world_size'] > 1 else ''})"
        )


if __name__ == "__main__":
    from zoo.launch import check_overrides, hydra_argv

    try:  # a mistyped group file or key: one line, before Hydra answers with a multi-line message
        check_overrides(sys.argv, Path(__file__).resolve().parent / "configs")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.argv = hydra_argv(sys.argv)
    main()
