"""The channel MLP of a MetaFormer block and the activations it is built with (StarReLU, GELU, ...)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn


class _StarReLUFunction(torch.autograd.Function):
    """``s * relu(x) ** 2 + b`` with a hand-written backward.

    Autograd through relu, square, mul and add keeps three intermediates and makes about twice as many
    passes over the activation; on a CPU that was a third of a ConvFormer's training step.
    """

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
        r = torch.relu(x)
        ctx.save_for_backward(r, scale)
        return torch.addcmul(bias, r * scale, r)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r, scale = ctx.saved_tensors
        grad_r = grad * r
        grad_scale = (grad_r * r).sum().reshape(scale.shape)
        grad_x = grad_r.mul_(2 * scale)  # d/dx relu(x)^2 = 2 relu(x)
        return grad_x, grad_scale, grad.sum().reshape(scale.shape)


class StarReLU(nn.Module):
    """``s * relu(x) ** 2 + b`` with learnable scalars s and b (Yu et al., MetaFormer Baselines).

    Cheaper than GELU (no erf); the scale and bias keep the output distribution near zero mean and
    unit variance for unit-normal inputs when set to 0.8944 and -0.4472, the paper's suggestion.
    The MetaFormer models start from s = 1, b = 0, as the reference code does.
    """

    function = staticmethod(_StarReLUFunction.apply)

    def __init__(self, scale_value: float = 1.0, bias_value: float = 0.0, learnable: bool = True):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale_value)), requires_grad=learnable)
        self.bias = nn.Parameter(torch.tensor(float(bias_value)), requires_grad=learnable)

    def forward(self, x: Tensor) -> Tensor:
        return self.function(x, self.scale, self.bias)


ACT_LAYERS: dict[str, Callable[[], nn.Module]] = {
    "starrelu": StarReLU,
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
}


def check_act_layer(act: str | Callable[[], nn.Module], name: str = "act_layer") -> str | Callable[[], nn.Module]:
    """Return ``act`` if it is a known activation name or a callable; raise ValueError otherwise."""
    if isinstance(act, str):
        if act not in ACT_LAYERS:
            raise ValueError(f"{name} must be one of {', '.join(ACT_LAYERS)} or a callable, got {act!r}")
        return act
    if not callable(act):
        raise ValueError(f"{name} must be one of {', '.join(ACT_LAYERS)} or a callable, got {act!r}")
    return act


def create_act_layer(act: str | Callable[[], nn.Module], name: str = "act_layer") -> nn.Module:
    """Build an activation from its name (``"starrelu"``, ``"gelu"``, ...) or a module class/factory."""
    act = check_act_layer(act, name)
    return ACT_LAYERS[act]() if isinstance(act, str) else act()


class Mlp(nn.Module):
    """Two linear layers over the last dimension: ``fc2(drop(act(fc1(x))))``.

    Args:
        in_features: input (and default output) channels.
        hidden_features: inner width; default ``4 * in_features``.
        out_features: output channels; default ``in_features``.
        act_layer: activation name or factory (``"starrelu"``, ``"gelu"``, ``"relu"``, ``"silu"``).
        bias: give the linear layers a bias. Off by default, as in the MetaFormer baselines.
        drop: dropout after the activation and after ``fc2``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: str | Callable[[], nn.Module] = "starrelu",
        bias: bool = False,
        drop: float = 0.0,
    ):
        super().__init__()
        hidden_features = hidden_features or 4 * in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = create_act_layer(act_layer)
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))
