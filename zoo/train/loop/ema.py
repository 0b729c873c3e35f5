"""Model EMA: an exponential moving average of the weights (and BatchNorm statistics), evaluated and
saved beside the raw weights.

It computes what ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn`` computes, bit
for bit, and saves the same state dict (the model's keys behind ``module.``, and ``n_averaged``), but
without the two costs that class pays every step on a GPU: copying its step counter from the host to
the device (a blocking copy: a sync) and averaging the integer buffers (BatchNorm's counters) one
tensor at a time.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn


class EMA(nn.Module):
    """An EMA of ``net`` (weights and buffers): the first update copies ``net``, each later one sets
    ``ema = decay * ema + (1 - decay) * net``. Calling it runs the averaged copy.

    Args:
        net: the model being trained (its device is the EMA's).
        decay: the weight of the old average, in [0, 1].
    """

    def __init__(self, net: nn.Module, decay: float):
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.module = copy.deepcopy(net)
        self.decay = decay
        # a host-side count (never moved with the model): deciding to copy or average reads no device
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update_parameters(self, net: nn.Module) -> None:
        ema = [t.detach() for t in (*self.module.parameters(), *self.module.buffers())]
        new = [t.detach() for t in (*net.parameters(), *net.buffers())]
        if int(self.n_averaged) == 0:
            torch._foreach_copy_(ema, new)
        else:
            by_dtype: dict[torch.dtype, tuple[list[Tensor], list[Tensor]]] = {}
            for e, n in zip(ema, new, strict=True):
                pair = by_dtype.setdefault(e.dtype, ([], []))
                pair[0].append(e)
                pair[1].append(n)
            for dtype, (es, ns) in by_dtype.items():
                if dtype.is_floating_point or dtype.is_complex:
                    torch._foreach_lerp_(es, ns, 1 - self.decay)
                else:  # integer counters: the float average, truncated back, as swa_utils does it
                    mixed = torch._foreach_add(
                        torch._foreach_mul(es, self.decay), torch._foreach_mul(ns, 1 - self.decay)
                    )
                    torch._foreach_copy_(es, mixed)
        self.n_averaged += 1
