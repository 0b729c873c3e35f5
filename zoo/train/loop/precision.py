"""What runs fastest on this device and keeps accuracy: bf16 autocast and channels_last, per device.

``amp: auto`` and ``channels_last: auto`` resolve here, once per run, and the run logs what they became
and why (its first line and summary.json). The rule follows what was measured (docs/benchmarks.md):

- bf16 autocast is fast only where the CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere
  it is slower than fp32, so ``auto`` keeps fp32 there.
- channels_last speeds up the ResNets on the CPUs measured and leaves the MetaFormers (whose blocks
  run channels-last already) within noise. On CUDA both are on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware, as torch reports it (AVX512-BF16 or AMX tiles).

    ``torch.cpu`` names these checks with a leading underscore; a torch without them answers False,
    which only costs speed (fp32), never accuracy.
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


@dataclass(frozen=True)
class Precision:
    amp: bool  # bf16 autocast
    channels_last: bool
    why: str  # how "auto" was decided, for the log

    def describe(self) -> str:
        return (
            f"amp={'bf16' if self.amp else 'off'}, channels_last={'on' if self.channels_last else 'off'} ({self.why})"
        )


def resolve_precision(amp: str | bool, channels_last: str | bool, device: torch.device) -> Precision:
    """The run's settings from its ``amp`` and ``channels_last`` keys: True / False as given; ``auto``:
    bf16 autocast on CUDA and on a CPU with bf16 in hardware, fp32 elsewhere; channels_last on."""
    cuda = device.type == "cuda"
    if amp != "auto":
        why = "amp as set"
        use_amp = bool(amp)
    elif cuda:
        why, use_amp = "auto: CUDA", True
    elif cpu_has_bf16():
        why, use_amp = "auto: this CPU has bf16 in hardware", True
    else:
        why, use_amp = "auto: this CPU has no bf16 in hardware", False
    use_cl = True if channels_last == "auto" else bool(channels_last)
    return Precision(use_amp, use_cl, why)


def torch_flags() -> dict[str, object]:
    """torch's process-wide kernel choices that a run sets (deterministic algorithms, cuDNN's autotuner
    and determinism, TF32): they outlive the run in the process that called it."""
    cudnn = torch.backends.cudnn
    return {
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_benchmark": cudnn.benchmark,
        "cudnn_deterministic": cudnn.deterministic,
        "cudnn_tf32": cudnn.allow_tf32,
        "matmul_precision": torch.get_float32_matmul_precision(),
    }


def set_torch_flags(flags: dict[str, object]) -> None:
    """Set what :func:`torch_flags` returned."""
    torch.use_deterministic_algorithms(bool(flags["deterministic"]), warn_only=bool(flags["warn_only"]))
    cudnn = torch.backends.cudnn
    cudnn.benchmark, cudnn.deterministic = bool(flags["cudnn_benchmark"]), bool(flags["cudnn_deterministic"])
    cudnn.allow_tf32 = bool(flags["cudnn_tf32"])
    torch.set_float32_matmul_precision(str(flags["matmul_precision"]))


@contextlib.contextmanager
def restored_torch_flags() -> Iterator[None]:
    """Within the block anything may change :func:`torch_flags`; on leaving, they are as they were."""
    saved = torch_flags()
    try:
        yield
    finally:
        set_torch_flags(saved)
