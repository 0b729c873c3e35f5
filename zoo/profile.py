"""Model size and cost: parameters, forward FLOPs, and CPU forward+backward time; the CPU they were
measured on (:func:`cpu_model`, for benchmark headers)."""

from __future__ import annotations

import platform
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 32, 32)) -> int:
    """Forward FLOPs (a multiply-add counts 2) of one eval-mode pass at ``input_size``.

    Counts the matrix products and convolutions that torch's FlopCounterMode knows; elementwise ops,
    norms and pooling are not counted (they are a few percent of a conv network).
    """
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(input_size))
    model.train(was_training)
    return counter.get_total_flops()


def time_train_step(model: nn.Module, batch: int = 128, repeats: int = 5, warmup: int = 2) -> float:
    """Median seconds of one forward + backward pass in train mode on a (batch, 3, 32, 32) input."""
    model.train()
    x = torch.randn(batch, 3, 32, 32)
    times = []
    for i in range(warmup + repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        model(x).float().logsumexp(1).mean().backward()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform says: every figure names its CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    except OSError:
        return platform.processor() or "unknown"
