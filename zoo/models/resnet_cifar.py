"""CIFAR ResNets (He et al. 2016): a 3x3 stem, three stages at widths 16/32/64, global pooling.

BasicBlock networks have 6n + 2 layers (resnet20: n = 3 ... resnet1202: n = 200); the Bottleneck
network has 9n + 2 (resnet164: n = 18). Drop path rates come from one rate (``drop_path_rate`` to
``create_model``) through :func:`zoo.layers.drop_path_rates`; ``drop_path_schedule="paper"`` gives the linear decay rule of
Huang et al. (block l of L dropped with probability r * l / L).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .._registry import register_model
from ..blocks.resnet import BasicBlock, Bottleneck
from ..layers import DropPathArgs, as_drop_path, drop_path_from_kwargs
from ._base import ZooModel, stage_drop_path_rates
from ._cfg import pretrained_cfg
from ._features import FeatureInfo, run_blocks

BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNetStage(nn.Sequential):
    """One block per entry of ``drop_paths``; the first one changes the width and the stride. NCHW in and out."""

    grad_checkpointing: bool = False  # set by ResNetCifar.set_grad_checkpointing

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        in_chs: int,
        width: int,
        *,
        stride: int,
        drop_paths: Sequence[DropPathArgs],
        shortcut: str = "A",
    ):
        blocks = []
        for i, drop_path in enumerate(drop_paths):
            blocks.append(block(in_chs, width, stride=stride if i == 0 else 1, drop_path=drop_path, shortcut=shortcut))
            in_chs = width * block.expansion
        super().__init__(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return run_blocks(self, x, self.grad_checkpointing)


class ResNetCifar(ZooModel):
    """A CIFAR ResNet. Its maps are NCHW, (B, C, H, W), the layout every zoo model's feature API
    returns; the three stages run at 1, 1/2 and 1/4 of the input size (``feature_info`` reductions
    1, 2, 4).

    Args:
        depths: blocks per stage, e.g. (3, 3, 3) for resnet20.
        widths: branch width per stage.
        block: "basic" or "bottleneck".
        num_classes: classifier outputs (0: no head, ``forward`` returns pooled features).
        in_chans: input channels.
        features_only: build a feature extractor: ``forward`` returns a list of stage maps (NCHW)
            and there is no classifier (see :meth:`ZooModel.init_features`).
        out_indices: with ``features_only``, the stages returned (None: all three).
        drop_path, drop_path_schedule, drop_path_rates: the drop path, as every zoo model takes it
            (:class:`zoo.models.ZooModel`).
        drop_rate: dropout before the classifier (timm's ``drop_rate``).
        global_pool: how the head pools the last map: "avg", "max" or "avgmax" (their average).
        shortcut: "A" (zero-padding, parameter-free) or "B" (1x1 conv) where the shape changes.
        zero_init_last: start every branch's last BatchNorm at gamma = 0, so each block starts as
            its shortcut (timm's default). Without it resnet1202 at initialisation overflows in
            eval mode; set False for the exact initialisation of He et al.
    """

    first_conv = "stem.0"  # timm's pretrained_cfg names it

    def __init__(
        self,
        depths: Sequence[int] = (3, 3, 3),
        widths: Sequence[int] = (16, 32, 64),
        *,
        block: str = "basic",
        num_classes: int = 10,
        in_chans: int = 3,
        features_only: bool = False,
        out_indices: int | Sequence[int] | None = None,
        drop_path: float | DropPathArgs = 0.0,
        drop_path_schedule: str = "linear",
        drop_path_rates: Sequence[float] | None = None,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        shortcut: str = "A",
        zero_init_last: bool = True,
    ):
        super().__init__()
        drop_path = as_drop_path(drop_path)
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {', '.join(BLOCKS)}, got {block!r}")
        if len(depths) != len(widths):
            raise ValueError(f"depths and widths need one entry per stage, got {depths} and {widths}")
        block_cls = BLOCKS[block]
        self.depths = self.drop_path_depths = tuple(depths)
        rates = stage_drop_path_rates(drop_path.rate, drop_path_rates, self.depths, drop_path_schedule)
        self.drop_path_schedule = drop_path_schedule if drop_path_rates is None else None
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        stages, in_chs, self.feature_info = [], widths[0], FeatureInfo()
        for i, (width, stage_rates) in enumerate(zip(widths, rates)):
            stride = 1 if i == 0 else 2
            drop_paths = [drop_path.with_rate(rate) for rate in stage_rates]
            stages.append(
                ResNetStage(block_cls, in_chs, width, stride=stride, drop_paths=drop_paths, shortcut=shortcut)
            )
            in_chs = width * block_cls.expansion
            self.feature_info.append(dict(num_chs=in_chs, reduction=2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = in_chs
        self.norm = nn.Identity()  # the head pools, then classifies: no norm
        self.init_head(num_classes, global_pool, drop_rate)
        self.pretrained_cfg = pretrained_cfg(self.first_conv, num_classes, in_chans)
        self._init_weights(zero_init_last)
        self.init_features(features_only, out_indices)

    def _init_weights(self, zero_init_last: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    last_bn = (m.conv_bn3 if isinstance(m, Bottleneck) else m.conv_bn2)[1]
                    nn.init.zeros_(last_bn.weight)


# Variants as data: name -> n, the blocks per stage (BasicBlock: 6n + 2 layers).
BASIC_VARIANTS = {
    "resnet8": 1,
    "resnet20": 3,
    "resnet32": 5,
    "resnet44": 7,
    "resnet56": 9,
    "resnet110": 18,
    "resnet1202": 200,
}


def _register_basic(name: str, n: int) -> None:
    def build(**kwargs) -> ResNetCifar:
        return ResNetCifar(depths=(n, n, n), block="basic", **drop_path_from_kwargs(kwargs))

    build.__name__ = name
    build.__doc__ = f"CIFAR ResNet-{6 * n + 2} (BasicBlocks, n = {n}){'; the tiny test variant' if n == 1 else ''}."
    register_model(build, name=name)


for _name, _n in BASIC_VARIANTS.items():
    _register_basic(_name, _n)


@register_model
def resnet164(**kwargs) -> ResNetCifar:
    """Bottleneck blocks, 9n + 2 layers with n = 18."""
    kwargs.setdefault("shortcut", "B")
    return ResNetCifar(depths=(18, 18, 18), block="bottleneck", **drop_path_from_kwargs(kwargs))
