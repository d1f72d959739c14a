"""The one precision vocabulary: names, the ``amp`` alias, the CPU fallback, the autocast it opens."""

from __future__ import annotations

import pytest
import torch

from sam_mix_monai.utils.precision import PRECISIONS, autocast, normalize_precision, resolve_precision


def test_names_and_alias() -> None:
    assert PRECISIONS == ("fp32", "fp16", "bf16")
    assert normalize_precision("amp") == "fp16"
    assert [normalize_precision(p) for p in PRECISIONS] == list(PRECISIONS)
    with pytest.raises(ValueError, match="int8"):
        normalize_precision("int8")


def test_fp16_falls_back_to_fp32_off_cuda() -> None:
    assert resolve_precision("fp16", "cpu") == "fp32"
    assert resolve_precision("amp", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("fp16", "cuda") == "fp16"  # a device name; no CUDA needed to resolve


def test_autocast_dtype() -> None:
    a, b = torch.rand(4, 4), torch.rand(4, 4)
    with autocast("bf16", "cpu"):
        assert (a @ b).dtype == torch.bfloat16
    with autocast("fp32", "cpu"):
        assert (a @ b).dtype == torch.float32


def test_native_bf16_is_read_from_the_cpu_flags() -> None:
    from sam_mix_monai.utils.precision import cpu_has_native_bf16

    amd = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    intel = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    assert not cpu_has_native_bf16(amd) and cpu_has_native_bf16(intel) and not cpu_has_native_bf16("")
