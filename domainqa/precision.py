"""Numeric precision for inference: which dtype a `dtype` setting means on a given device, whether this CPU
has native bfloat16 arithmetic, and the mixed-precision recipes measured in `docs/performance.md` (CPU precision).

bfloat16 only pays on a CPU that computes it natively (Intel AMX `amx_bf16`, or `avx512_bf16`): there PyTorch's
oneDNN kernels multiply bfloat16 several times faster than float32. Elsewhere bfloat16 is emulated and much
slower than float32 (on an AVX2-only CPU, linear layers ran about 6x slower), so it is never picked by itself.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import torch
from torch import nn

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # x86 flags in /proc/cpuinfo that mean native bfloat16 arithmetic

# What `dtype: auto` picks on a CPU with native bfloat16. Measured (docs/performance.md, numeric precision): the
# bfloat16 variants keep 92-95 of 100 float32 labels of the untouched model, so auto stays float32; set
# `dtype: bfloat16` to trade answers for speed on such a CPU.
CPU_AUTO_BF16 = False


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo's first processor; empty where unknown (not Linux, unreadable)."""
    if platform.system() != "Linux":
        return frozenset()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86; aarch64 names its flags "Features"
            return frozenset(value.split())
    return frozenset()


def cpu_supports_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AMX or AVX-512 BF16), read from its flags, never assumed."""
    return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)


def resolve_dtype(name: str, device: str | torch.device = "cpu") -> torch.dtype | Literal["auto"]:
    """The dtype to load a model in for a `dtype` setting on `device`.

    "float32", "bfloat16" and "float16" are taken as given. "auto": on CPU, bfloat16 where the CPU computes it
    natively and `CPU_AUTO_BF16` says it keeps the answers, else float32 (a checkpoint stored in half precision
    is still computed in float32 on CPU, where emulated half precision is slow). On any other device "auto" is
    returned unchanged: `from_pretrained(dtype="auto")` keeps the checkpoint's own dtype, as before."""
    if name in DTYPES:
        return DTYPES[name]
    if name != "auto":
        raise ValueError(f"unknown dtype {name!r}; expected auto or one of {', '.join(DTYPES)}")
    if torch.device(device).type != "cpu":
        return "auto"
    return torch.bfloat16 if CPU_AUTO_BF16 and cpu_supports_bf16() else torch.float32


def cpu_dtype_warning(dtype: torch.dtype | str) -> str | None:
    """A warning for computing in `dtype` on this CPU when it only emulates that precision (bfloat16 without
    AMX / AVX-512 BF16, float16 without AMX-FP16 / AVX-512 FP16), which is several times slower than float32;
    None when there is nothing to warn about."""
    if dtype == torch.bfloat16 and not cpu_supports_bf16():
        return (
            "this CPU has no native bfloat16 (amx_bf16, avx512_bf16): bfloat16 runs several times slower than float32"
        )
    if dtype == torch.float16 and not {"amx_fp16", "avx512_fp16"} & cpu_flags():
        return "this CPU has no native float16 (amx_fp16, avx512_fp16): float16 runs several times slower than float32"
    return None


def bf16_autocast(device: str | torch.device = "cpu", enabled: bool = True) -> contextlib.AbstractContextManager:
    """bfloat16 matrix multiplies on float32 weights (float32 residual stream), or a no-op when not enabled."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def _cast_input(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.to(module.weight.dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def _cast_output(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.float()


def bf16_linear_weights(model: nn.Module, keep_float32: Iterable[str] = ("lm_head",)) -> nn.Module:
    """Store every linear layer's weight in bfloat16 except those named in `keep_float32` (and modules sharing
    their weights, such as tied embeddings); everything else stays float32: embeddings, RMSNorm, rotary
    embeddings, attention, the residual stream and the vocabulary head. Each bfloat16 layer takes its input
    cast to bfloat16 and gives float32 back. The model is changed in place and returned."""
    model.float()
    names = set(keep_float32)
    kept = {id(module.weight) for name, module in model.named_modules() if name.rpartition(".")[2] in names}
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module.weight) not in kept:
            module.to(torch.bfloat16)
            module.register_forward_pre_hook(_cast_input)
            module.register_forward_hook(_cast_output)
    return model
