"""What every zoo model shares: the classifier API and the installed drop path rates."""

from __future__ import annotations

from torch import Tensor, nn

from ..layers import block_drop_path_rates, set_drop_path_factor


class ZooModel(nn.Module):
    """Base of every registered model.

    Subclasses set ``depths`` (blocks per stage), ``num_classes``, ``num_features`` and ``head`` (a Linear, or Identity when
    ``num_classes == 0``), and implement ``forward_features`` (input -> pooled features (B, F))
    and keep their DropPathBlocks registered in forward order.
    """

    depths: tuple[int, ...]
    drop_path_factor: float = 1.0  # set by set_drop_path_factor
    model_name: str | None = None  # the registered name, set by zoo.create_model
    num_classes: int
    num_features: int
    head: nn.Module

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a fresh one for ``num_classes`` classes (0: features only)."""
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def drop_path_rates(self) -> list[float]:
        """The per-block drop path rates installed now, in forward order (a flat list)."""
        return block_drop_path_rates(self)

    def set_drop_path_factor(self, factor: float) -> None:
        """Install ``factor`` (in [0, 1]) times every block's built rate: what a training-time
        schedule (:func:`zoo.layers.time_factor`) sets as training goes. The built rates are kept, so
        ``set_drop_path_factor(1.0)`` restores them. Under torch.compile a new factor is a buffer
        write, not a recompile (except for skip mode's fixed draw, whose kept count changes)."""
        if factor != self.drop_path_factor:  # a schedule asks every step; the blocks change when it moves
            set_drop_path_factor(self, factor)
            self.drop_path_factor = factor
