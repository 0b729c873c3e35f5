"""Model EMA: an exponential moving average of the weights (and BatchNorm statistics), evaluated and
saved beside the raw weights. ``torch.optim.swa_utils.AveragedModel`` does the averaging.

Its step counter (``n_averaged``) stays on the CPU and is copied to the device at every update: on a
GPU that is one blocking copy per step while EMA is on.
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def build_ema(net: nn.Module, decay: float) -> AveragedModel:
    """An EMA of ``net`` (weights and buffers), each update ``ema = decay * ema + (1 - decay) * net``;
    the first update copies ``net``."""
    return AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
