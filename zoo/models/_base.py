"""What every zoo model shares: timm's classifier and feature API, and the installed drop path rates."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..layers import block_drop_path_rates, drop_path_blocks, set_drop_path_factor
from ._features import FeatureInfo, check_output_fmt, take_indices


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
        """Pool a map from :meth:`forward_features` to (B, num_features), norm it where the family does
        (MetaFormer), then classify it: the logits, or the normed pooled features with ``pre_logits``."""
        x = self.norm(x.mean((2, 3)))
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

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` classes (0: none)."""
        if self.features_only:
            raise ValueError(
                f"reset_classifier({num_classes!r}): a features_only model has no classifier; build one without features_only"
            )
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
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
