"""Layers: DropPath and its residual forms, depth schedules, and the pieces blocks are built from."""

from .drop import DRAW_MODES, DropPath, check_drop_prob, drop_path, drop_path_add, drop_path_skip_add, keep_mask
from .residual import (
    DROP_PATH_MODES,
    DropPathBlock,
    block_drop_path_rates,
    check_drop_path_mode,
    resolve_skip,
    set_block_drop_path_rates,
)
from .schedules import DEPTH_SCHEDULES, check_depth_schedule, drop_path_rates
