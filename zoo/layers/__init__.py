"""Layers: DropPath and its residual forms, depth schedules, and the pieces blocks are built from."""

from .drop import (
    DRAW_MODES,
    DropPath,
    can_overwrite,
    check_drop_prob,
    drop_path,
    drop_path_add,
    drop_path_skip_add,
    keep_mask,
    residual_add,
)
from .residual import (
    DROP_PATH_MODES,
    DropPathBlock,
    block_drop_path_rates,
    check_drop_path_mode,
    resolve_skip,
    set_block_drop_path_rates,
)
from .schedules import DEPTH_SCHEDULES, check_depth_schedule, drop_path_rates
from .mlp import ACT_LAYERS, Mlp, StarReLU, create_act_layer
from .norm import LayerNorm, LayerNorm2d
from .scale import LayerScale, ResScale, Scale, make_scale
from .mixers import TOKEN_MIXERS, Attention, IdentityMixer, Pooling, RandomMixing, SepConv, create_token_mixer
