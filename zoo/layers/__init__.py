"""Layers: DropPath and its residual forms, drop path schedules, and the pieces blocks are built from."""

from .drop import (
    DRAW_MODES,
    SKIP_DRAWS,
    DropPath,
    check_drop_prob,
    check_skip_draw,
    drop_path,
    drop_path_add,
    drop_path_skip_add,
    keep_mask,
)
from .residual import (
    DROP_PATH_MODES,
    FIXED_DRAW_FACTOR_STEPS,
    DropPathArgs,
    DropPathBlock,
    as_drop_path,
    block_drop_path_rates,
    check_drop_path_mode,
    drop_path_blocks,
    drop_path_from_kwargs,
    resolve_skip,
    set_drop_path_factor,
)
from .schedules import (
    DEPTH_SCHEDULES,
    EARLY_MODES,
    TIME_SCHEDULES,
    check_depth_schedule,
    check_time_schedule,
    drop_path_rates,
    time_factor,
)
from .mlp import ACT_LAYERS, Mlp, StarReLU, create_act_layer
from .norm import LayerNorm, LayerNorm2d
from .scale import LayerScale, ResScale, Scale, make_scale
from .mixers import TOKEN_MIXERS, Attention, IdentityMixer, Pooling, RandomMixing, SepConv, create_token_mixer
