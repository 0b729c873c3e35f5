"""What every zoo model shares: timm's classifier, feature API and pretrained_cfg, and its drop path rates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from ..layers import (
    DropPathArgs,
    block_drop_path_rates,
    check_drop_prob,
    drop_path_blocks,
    drop_path_kwargs,
    drop_path_rates,
    set_drop_path_factor,
)
from ._features import FeatureInfo, check_output_fmt, take_indices

# timm's names: the mean ("fast" is timm's faster mean, here the same), the max, or their average over H and W
GLOBAL_POOLS = ("avg", "fast", "max", "avgmax")


def check_global_pool(global_pool: str) -> str:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be one of {', '.join(GLOBAL_POOLS)}, got {global_pool!r}")
    return global_pool


def global_pool_2d(x: Tensor, kind: str) -> Tensor:
    """An NCHW map pooled to (B, C): ``kind`` is one of :data:`GLOBAL_POOLS`."""
    if kind in ("avg", "fast"):
        return x.mean((2, 3))
    if kind == "max":
        return x.amax((2, 3))
    return 0.5 * (x.mean((2, 3)) + x.amax((2, 3)))


def block_rates(rate: float | Sequence[float], depths: Sequence[int], schedule: str | None) -> list[list[float]]:
    """Every block's drop path rate, one list per stage: one ``rate`` spread over ``depths`` by
    ``schedule`` (:func:`zoo.layers.drop_path_rates`), or a flat sequence of one rate per block, in
    forward order, which must have ``sum(depths)`` entries."""
    if isinstance(rate, Sequence) and not isinstance(rate, str):
        rates = [check_drop_prob(r, f"drop_path_rates[{i}]") for i, r in enumerate(rate)]
        if len(rates) != sum(depths):
            raise ValueError(
                f"drop_path_rates has {len(rates)} entries but the model has {sum(depths)} blocks "
                f"(depths {tuple(depths)}): give one rate per block"
            )
        starts = [sum(depths[:i]) for i in range(len(depths))]
        return [rates[start : start + d] for start, d in zip(starts, depths)]
    if schedule is None:
        raise ValueError("this model was built from a list of rates, it has no schedule over depth: pass schedule=")
    return drop_path_rates(rate, tuple(depths), schedule)


def stage_drop_path_rates(
    rate: float, rates: Sequence[float] | None, depths: Sequence[int], schedule: str
) -> list[list[float]]:
    """A constructor's per-stage rates: ``rates`` (one per block) when given, else ``rate`` over depth."""
    if rates is None:
        return block_rates(rate, depths, schedule)
    if rate > 0:
        raise ValueError(f"give drop_path_rate or drop_path_rates, not both (got drop_path_rate={rate} and a list)")
    return block_rates(rates, depths, None)


class ZooModel(nn.Module):
    """Base of every registered model: a ``stem``, then ``stages`` (an nn.Sequential), then a head that
    pools each map to its channel means, applies ``norm`` (Identity where a family has none) and the
    classifier ``head`` (a Linear, or Identity when ``num_classes == 0``).

    Every map the feature API returns is NCHW, (B, C, H, W), in every family; ``output_fmt="NHWC"``
    asks :meth:`forward_intermediates` for (B, H, W, C). A family whose stages run another layout
    overrides :meth:`to_nchw` (MetaFormer's stages run channels-last).

    Subclasses set ``depths`` (blocks per stage), ``num_classes``, ``num_features`` (channels of the
    last stage), ``stem``, ``stages`` (each with a ``grad_checkpointing`` flag), ``norm``, ``head``
    and ``feature_info`` (one dict per stage), keep their DropPathBlocks registered in forward order,
    and end their constructor with :meth:`init_features`.

    The keywords every family's constructor takes for its drop path:

    - ``drop_path``: the largest per-block drop path rate, or a :class:`zoo.layers.DropPathArgs` with it,
      the mode ("mask", "skip": branches run on kept samples only, or "auto") and skip mode's draw. The
      registered builders (``create_model``) take it as timm's keywords (``drop_path_rate`` and the like:
      :func:`zoo.layers.drop_path_from_kwargs`).
    - ``drop_path_schedule``: how rates grow with depth (see :func:`zoo.layers.drop_path_rates`).
    - ``drop_path_rates``: one rate per block, in forward order, instead of a rate and a schedule.
    """

    depths: tuple[int, ...]
    model_name: str | None = None  # the registered name, set by zoo.create_model
    model_args: dict | None = None  # the keyword arguments create_model built it with, set by zoo.create_model
    num_classes: int
    num_features: int
    stem: nn.Module
    stages: nn.Sequential
    norm: nn.Module
    head: nn.Module
    feature_info: FeatureInfo
    features_only: bool = False
    out_indices: tuple[int, ...] = ()  # the stages a features_only model returns
    pruned_keys: frozenset[str] = frozenset()  # the full model's state-dict keys a features_only model lacks
    grad_checkpointing: bool = False
    global_pool: str = "avg"
    head_drop: nn.Module
    drop_path_schedule: str | None = None  # how the built rates grow with depth; None when built from a list
    drop_path_depths: tuple[int, ...] = ()  # the depths the rates were spread over (before any pruning)
    _pruned_drop_path_rate: float | None = None  # r of a model whose last blocks were pruned (they held it)
    first_conv: str  # the stem convolution's module name, for pretrained_cfg
    pretrained_cfg: dict[str, Any]  # timm's fields: input size, mean, std, interpolation, crop, classifier

    def init_head(self, num_classes: int, global_pool: str, drop_rate: float) -> None:
        """The classifier for ``num_classes`` after ``global_pool`` and a dropout of ``drop_rate``."""
        self.head_drop = nn.Dropout(check_drop_prob(drop_rate, "drop_rate"))
        self.reset_classifier(num_classes, global_pool)

    @property
    def default_cfg(self) -> dict[str, Any]:
        """timm's older name of :attr:`pretrained_cfg`."""
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, cfg: dict[str, Any]) -> None:
        self.pretrained_cfg = cfg

    def init_features(self, features_only: bool = False, out_indices: int | Sequence[int] | None = None) -> None:
        """Make this a feature extractor (``features_only``): ``forward`` returns the maps of the stages
        in ``out_indices`` (see :meth:`forward_intermediates`; None: every stage), the stages after the
        last of them, the head's norm and the classifier are removed, and ``feature_info`` lists the
        returned stages only. Weights are drawn before the pruning: for one seed, a features_only
        model's stages hold the same weights as the full model's."""
        if not features_only:
            if out_indices is not None:
                raise ValueError(f"out_indices={out_indices!r} needs features_only=True")
            return
        take = take_indices(len(self.stages), out_indices, "out_indices")
        full = set(self.state_dict())
        self.prune_intermediate_layers(take, prune_norm=True)
        self.pruned_keys = frozenset(full - set(self.state_dict()))  # a classifier checkpoint's keys it ignores
        self.out_indices = tuple(take)
        self.feature_info = FeatureInfo(self.feature_info[i] for i in take)
        self.features_only = True

    def to_nchw(self, x: Tensor) -> Tensor:
        """A stage's output in NCHW; the identity where stages run NCHW."""
        return x

    def forward_features(self, x: Tensor) -> Tensor:
        """The unpooled final feature map, NCHW: (B, num_features, H, W)."""
        return self.to_nchw(self.stages(self.stem(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool a map from :meth:`forward_features` to (B, num_features) (``global_pool``), norm it where
        the family does (MetaFormer), apply the dropout of ``drop_rate``, then classify it: the logits,
        or the features the classifier would see with ``pre_logits``."""
        x = self.head_drop(self.norm(global_pool_2d(x, self.global_pool)))
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        """Logits (B, num_classes); pooled features (B, num_features) when ``num_classes == 0``; a list
        of NCHW stage maps for a ``features_only`` model."""
        if self.features_only:
            return self.forward_intermediates(x, self.out_indices, intermediates_only=True)
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Stage outputs, as timm's ``forward_intermediates``.

        Args:
            indices: the stages to return, in stage order: None for all, an int n for the last n, or a
                sequence of stage indices (negative ones count from the end).
            norm: timm's "norm the intermediates where a norm fits". No zoo map has one (MetaFormer's
                final norm acts on the pooled vector, in :meth:`forward_head`), so it changes nothing.
            stop_early: run no stage after the last one returned (the final map is then that stage's).
            output_fmt: "NCHW" (B, C, H, W) or "NHWC" (B, H, W, C), for the intermediates.
            intermediates_only: return the list alone.

        Returns:
            ``(final, intermediates)``: ``final`` as :meth:`forward_features` returns it (NCHW), and one
            map per returned stage; or the list alone with ``intermediates_only``.
        """
        take = take_indices(len(self.stages), indices)
        check_output_fmt(output_fmt)
        last = take[-1] if stop_early or intermediates_only else len(self.stages) - 1
        intermediates = []
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            if i > last:
                break
            x = stage(x)
            if i in take:
                y = self.to_nchw(x)
                intermediates.append(y if output_fmt == "NCHW" else y.permute(0, 2, 3, 1))
        if intermediates_only:
            return intermediates
        return self.to_nchw(x), intermediates

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] | None = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Remove the stages after the last of ``indices`` (read as in :meth:`forward_intermediates`), and
        the head's norm (``prune_norm``) and classifier (``prune_head``), as timm's method of that name.
        Norm and classifier also go when the last stage does: they were built for its width.
        ``depths`` and ``num_features`` then describe the stages left; the remaining blocks keep
        their drop path rates. Returns the stage indices, sorted."""
        take = take_indices(len(self.stages), indices)
        last = take[-1]
        if last < len(self.stages) - 1:
            self._pruned_drop_path_rate = self.drop_path_rate
            self.stages = self.stages[: last + 1]
            self.depths = self.depths[: last + 1]
            self.num_features = self.feature_info[last]["num_chs"]
            prune_norm = prune_head = True
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take

    def get_classifier(self) -> nn.Module:
        """The classifier: a Linear (num_features -> num_classes), or Identity when there is none."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` classes (0: none); a ``global_pool``
        (one of :data:`GLOBAL_POOLS`) replaces the pooling too."""
        if self.features_only:
            raise ValueError(
                f"reset_classifier({num_classes!r}): a features_only model has no classifier; build one without features_only"
            )
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if global_pool is not None:
            self.global_pool = check_global_pool(global_pool)
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Keep each block's input only and recompute its activations in backward (training forwards
        only; ``torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)``): less memory for
        a second forward's time. Outputs, gradients, drop path draws and BatchNorm running statistics
        are those of a plain forward (see :func:`zoo.models._features.run_blocks`)."""
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def drop_path_rates(self) -> list[float]:
        """The per-block drop path rates installed now, in forward order (a flat list)."""
        return block_drop_path_rates(self)

    @property
    def drop_path_factor(self) -> float:
        """The factor installed now (:meth:`set_drop_path_factor`), as its blocks hold it; 1.0 without blocks."""
        return next((block.drop_path_factor for block in drop_path_blocks(self)), 1.0)

    def set_drop_path_factor(self, factor: float) -> None:
        """Install ``factor`` (in [0, 1]) times every block's built rate: what a training-time
        schedule (:func:`zoo.layers.time_factor`) sets as training goes; the same as
        :func:`zoo.layers.set_drop_path_factor` on the model. The built rates are kept, so
        ``set_drop_path_factor(1.0)`` restores them. Under torch.compile a new factor is a buffer
        write, not a recompile, in mask mode; skip mode's fixed draw keeps a sample count for the
        factor rounded to quarters, so a compiled run makes at most
        ``zoo.layers.FIXED_DRAW_FACTOR_STEPS + 2`` graphs (6) whatever its schedule."""
        set_drop_path_factor(self, factor)

    @property
    def drop_path_rate(self) -> float:
        """The largest per-block rate the model was built with (a schedule's r). Assigning a value sets
        every block's rate again: ``model.drop_path_rate = 0.3`` is :func:`set_drop_path_rate`."""
        if self._pruned_drop_path_rate is not None:
            return self._pruned_drop_path_rate
        return max((block.base_drop_path for block in drop_path_blocks(self)), default=0.0)

    @drop_path_rate.setter
    def drop_path_rate(self, rate: float) -> None:
        set_drop_path_rate(self, rate)


def set_drop_path_rate(model: ZooModel, rate: float | Sequence[float], schedule: str | None = None) -> None:
    """Set every block's drop path rate as if ``model`` had been built with ``rate``.

    Unlike :func:`zoo.layers.set_drop_path_factor`, which scales the built rates by a factor in [0, 1],
    this replaces them: blocks built at 0 get a DropPath, blocks set to 0 lose theirs. A training-time
    factor already installed applies on top of the new rates.

    Args:
        model: a zoo model.
        rate: the largest rate r in [0, 1], spread over depth by ``schedule``; or a sequence of one
            rate per block, in forward order (as ``create_model(drop_path_rates=...)``).
        schedule: one of :data:`zoo.layers.DEPTH_SCHEDULES`; None keeps the model's own
            (``model.drop_path_schedule``), which the model then records.
    """
    if not isinstance(model, ZooModel):
        raise TypeError(f"set_drop_path_rate takes a zoo model, got {type(model).__name__}")
    blocks = drop_path_blocks(model)
    is_list = isinstance(rate, Sequence) and not isinstance(rate, str)
    if is_list and schedule is not None:
        raise ValueError(
            f"give a rate and a schedule, or a list of rates alone (got the list and schedule={schedule!r})"
        )
    schedule = None if is_list else schedule or model.drop_path_schedule
    # a pruned model keeps the first blocks of the depths its rates were spread over
    depths = (len(blocks),) if is_list else model.drop_path_depths
    rates = [r for stage in block_rates(rate, depths, schedule) for r in stage][: len(blocks)]
    for block, block_rate in zip(blocks, rates):
        block.set_base_drop_path(block_rate)
    model.drop_path_schedule = schedule
    if model._pruned_drop_path_rate is not None:
        model._pruned_drop_path_rate = max(map(float, rate), default=0.0) if is_list else float(rate)
    if model.model_args is not None:  # what a checkpoint rebuilds the model with
        args = {
            k: v
            for k, v in model.model_args.items()
            if k not in ("drop_path_rate", "drop_path_rates", "drop_path_schedule")
        }
        given = args.pop("drop_path", None)
        if isinstance(given, DropPathArgs):  # keep its mode and draw, under create_model's names
            args.update({k: v for k, v in drop_path_kwargs(given).items() if k != "drop_path_rate"})
        if is_list:
            args["drop_path_rates"] = [float(r) for r in rate]
        else:
            args.update(drop_path_rate=float(rate), drop_path_schedule=schedule)
        model.model_args = args
