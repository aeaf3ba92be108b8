"""Which CPU kernels run a precision: a variant is certified for the kernels it was measured on.

OpenVINO's CPU plugin (oneDNN) runs int8 and bf16 with the best instruction set the CPU has, and
kernels of different instruction sets do not compute alike: int8 on AVX2 or plain AVX-512 sums
uint8 x int8 products pairwise in 16 bits, VNNI in 32, AMX in tiles of its own; bf16 exists only
with AVX-512 bf16 or AMX. An INT8 file made by the same recipe kept its mAP50 on an AMD EPYC and
lost 3.3 points on an AMX Xeon, so an accuracy measured with one set of kernels is no evidence for
another: the export records which kernels certified a variant, and a station's ``precision: auto``
runs it only where its CPU uses the same ones.
"""

from __future__ import annotations

__all__ = ["KERNELS", "cpu_kernels"]

# Per precision, the instruction sets (cpuinfo flag names) oneDNN runs it with, best first.
KERNELS: dict[str, tuple[str, ...]] = {
    "int8": ("amx_int8", "avx512_vnni", "avx_vnni", "avx512f", "avx2"),
    "bf16": ("amx_bf16", "avx512_bf16"),
}


def cpu_kernels(precision: str, flags: frozenset[str]) -> str | None:
    """The kernels a CPU with ``flags`` runs ``precision`` with; None where it has no native ones
    (OpenVINO then runs bf16 as f32, and int8 is not worth trying)."""
    return next((k for k in KERNELS.get(precision, ()) if k in flags), None)
