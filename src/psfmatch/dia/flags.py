"""The DIA-source flag bitmask: bit names, and mask planes read under footprints.

``flags`` is an int64 column; bit ``FLAG_BITS[name]`` is set when ``name`` applies.
Bits 0-10 copy mask planes (set when the plane is set on any pixel of the source's
grown footprint and the plane is in ``DiaOptions.flag_planes``); bits 16 and up are
measurement outcomes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["FLAG_BITS", "FLAG_DESCRIPTIONS", "decode_flags", "flag_value"]

#: Flag name -> bit index (the bit mask is ``1 << index``).
FLAG_BITS: Mapping[str, int] = {
    "SAT": 0,
    "SAT_TEMPLATE": 1,
    "EDGE": 2,
    "NO_DATA": 3,
    "BAD": 4,
    "CR": 5,
    "INTRP": 6,
    "SUSPECT": 7,
    "HIGH_VARIANCE": 8,
    "INJECTED": 9,
    "INJECTED_TEMPLATE": 10,
    "STREAK": 16,
    "CENTROID_FAILED": 17,
    "PSF_FLUX_FAILED": 18,
    "SHAPE_FAILED": 19,
    "DIPOLE_FIT_FAILED": 20,
}

#: One line per flag, for table metadata and the README.
FLAG_DESCRIPTIONS: Mapping[str, str] = {
    "SAT": "saturated science pixel in the footprint",
    "SAT_TEMPLATE": "saturated template pixel (dilated by the kernel) in the footprint",
    "EDGE": "footprint touches the unconvolved border of the difference",
    "NO_DATA": "footprint touches pixels without data",
    "BAD": "footprint touches bad pixels",
    "CR": "footprint touches a cosmic-ray pixel",
    "INTRP": "footprint touches interpolated pixels",
    "SUSPECT": "footprint touches suspect (e.g. non-linear) pixels",
    "HIGH_VARIANCE": "footprint touches high-variance pixels",
    "INJECTED": "footprint touches injected (fake) science sources",
    "INJECTED_TEMPLATE": "footprint touches injected (fake) template sources",
    "STREAK": "footprint elongated like a streak (axis ratio and length over limits)",
    "CENTROID_FAILED": "PSF-fit centroid failed or moved too far; the filtered peak is used",
    "PSF_FLUX_FAILED": "no usable pixel under the PSF; psf_flux is NaN",
    "SHAPE_FAILED": "adaptive second moments did not converge; shape columns are NaN",
    "DIPOLE_FIT_FAILED": "the +/- pair could not be fitted as a dipole; peaks kept apart",
}


def flag_value(names: Iterable[str]) -> int:
    """OR of ``1 << FLAG_BITS[name]`` over ``names`` (KeyError names an unknown flag)."""
    value = 0
    for name in names:
        value |= 1 << FLAG_BITS[name]
    return value


def decode_flags(value: int | np.integer) -> list[str]:
    """Names of the flags set in ``value``, in bit order."""
    v = int(value)
    return [name for name, bit in sorted(FLAG_BITS.items(), key=lambda kv: kv[1])
            if v & (1 << bit)]
