"""In-memory exposure model: image, mask and variance travelling together.

The model mirrors an LSST afw ``Exposure`` closely enough that a calexp round-trips:

* ``image``: float32, shape ``(ny, nx)``, numpy order ``[y, x]``;
* ``mask``: int32 bit planes, same shape; ``mask_planes`` maps a plane name
  (``"BAD"``, ``"SAT"``, ``"NO_DATA"``, ...) to its bit *index* (plane ``p`` is set
  where ``mask & (1 << mask_planes[p])``);
* ``variance``: float32, same shape, in (image units)**2;
* ``wcs``: an :class:`astropy.wcs.WCS` or ``None``;
* ``psf``: an optional PSF model (anything with ``image_at(x, y)`` and ``fwhm``);
* ``metadata``: header cards that are not structural or WCS, as an ordered dict;
* ``xy0``: parent coordinate of array element ``[0, 0]``, as afw's ``getXY0()``.

No function here reads or writes files: that is :mod:`psfmatch.io`'s job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from psfmatch.errors import ExposureError

__all__ = [
    "DEFAULT_MASK_PLANES",
    "Exposure",
    "PsfModel",
    "flag_unusable_variance",
    "planes_bitmask",
    "remap_mask_bits",
]

#: afw's default mask planes and their bit indices (``afw.image.Mask`` on a fresh
#: process). An LSST calexp carries its own ``MP_*`` cards, which take precedence.
DEFAULT_MASK_PLANES: dict[str, int] = {
    "BAD": 0,
    "SAT": 1,
    "INTRP": 2,
    "CR": 3,
    "EDGE": 4,
    "DETECTED": 5,
    "DETECTED_NEGATIVE": 6,
    "SUSPECT": 7,
    "NO_DATA": 8,
}

#: Largest bit index an int32 mask can hold without touching the sign bit.
MAX_MASK_BIT = 30


def remap_mask_bits(
    mask: np.ndarray, from_planes: Mapping[str, int], to_planes: Mapping[str, int]
) -> np.ndarray:
    """Re-express ``mask`` (numbered by ``from_planes``) in the ``to_planes`` numbering.

    Planes absent from ``to_planes`` are dropped; the result has ``mask``'s dtype and
    shape (any leading stack axes included). Returns ``mask`` itself when the two
    numberings agree on every plane it defines.
    """
    mask = np.asarray(mask)
    if all(to_planes.get(p) == b for p, b in from_planes.items()):
        return mask
    out = np.zeros_like(mask)
    for plane, bit in from_planes.items():
        if plane in to_planes:
            out |= np.where((mask & (1 << bit)) != 0, 1 << to_planes[plane], 0).astype(mask.dtype)
    return out


class PsfModel(Protocol):
    """What the pipeline needs of a PSF model."""

    @property
    def fwhm(self) -> float:
        """FWHM in pixels (at the image centre for a spatially varying model)."""

    def image_at(self, x: float, y: float) -> np.ndarray:
        """Unit-sum, odd-sized PSF image centred on ``(x, y)`` (parent pixels)."""


@dataclass(frozen=True, eq=False)
class Exposure:
    """An image with its mask, variance, WCS, optional PSF and metadata.

    Construction validates shapes and dtypes and converts ``image``/``variance`` to
    float32 and ``mask`` to int32 (copies only when the dtype differs). Arrays are
    shared, not copied: treat an ``Exposure`` as immutable and use :meth:`with_`
    to derive a new one.
    """

    image: np.ndarray
    mask: np.ndarray
    variance: np.ndarray
    mask_planes: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_MASK_PLANES))
    wcs: Any = None
    psf: PsfModel | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    xy0: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        image = np.asarray(self.image)
        if image.ndim != 2:
            msg = f"image must be 2-D, got {image.ndim}-D array of shape {image.shape}"
            raise ExposureError(msg)
        if not np.issubdtype(image.dtype, np.floating):
            msg = f"image must be floating point, got dtype {image.dtype}"
            raise ExposureError(msg)
        for name in ("mask", "variance"):
            arr = np.asarray(getattr(self, name))
            if arr.shape != image.shape:
                msg = f"{name} shape {arr.shape} differs from image shape {image.shape}"
                raise ExposureError(msg)
        mask = np.asarray(self.mask)
        if not np.issubdtype(mask.dtype, np.integer):
            msg = f"mask must be an integer array, got dtype {mask.dtype}"
            raise ExposureError(msg)
        planes = dict(self.mask_planes)
        for plane, bit in planes.items():
            if not isinstance(bit, int | np.integer) or not 0 <= int(bit) <= MAX_MASK_BIT:
                msg = (f"mask plane {plane!r} has bit {bit!r}; "
                       f"bits must be integers 0..{MAX_MASK_BIT}")
                raise ExposureError(msg)
        bits = [int(b) for b in planes.values()]
        if len(set(bits)) != len(bits):
            msg = f"mask planes share a bit: {planes}"
            raise ExposureError(msg)
        object.__setattr__(self, "image", image.astype(np.float32, copy=False))
        object.__setattr__(self, "mask", mask.astype(np.int32, copy=False))
        object.__setattr__(
            self, "variance", np.asarray(self.variance).astype(np.float32, copy=False)
        )
        object.__setattr__(self, "mask_planes", {str(k): int(v) for k, v in planes.items()})
        object.__setattr__(self, "metadata", dict(self.metadata))
        object.__setattr__(self, "xy0", (int(self.xy0[0]), int(self.xy0[1])))

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, int]:
        """Array shape ``(ny, nx)``."""
        return self.image.shape  # type: ignore[return-value]

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """Inclusive parent bounding box ``(min_x, min_y, max_x, max_y)`` (afw ``Box2I``)."""
        ny, nx = self.shape
        x0, y0 = self.xy0
        return (x0, y0, x0 + nx - 1, y0 + ny - 1)

    # ------------------------------------------------------------------ mask helpers
    def plane_bitmask(self, planes: Iterable[str], *, missing_ok: bool = True) -> int:
        """OR of ``1 << bit`` for the named planes.

        Planes absent from ``mask_planes`` are ignored when ``missing_ok`` (a plane
        nobody defined cannot be set), else raise :class:`ExposureError`.
        """
        value = 0
        for plane in planes:
            if plane in self.mask_planes:
                value |= 1 << self.mask_planes[plane]
            elif not missing_ok:
                msg = f"unknown mask plane {plane!r}; known planes: {sorted(self.mask_planes)}"
                raise ExposureError(msg)
        return value

    def plane(self, name: str) -> np.ndarray:
        """Boolean array: where mask plane ``name`` is set."""
        return (self.mask & self.plane_bitmask([name], missing_ok=False)) != 0

    def with_planes(self, names: Iterable[str]) -> Exposure:
        """Return a copy whose ``mask_planes`` also defines ``names`` (next free bits).

        Image, mask and variance arrays are shared, not copied; only the plane
        dictionary grows.
        """
        planes = dict(self.mask_planes)
        for name in names:
            if name in planes:
                continue
            free = sorted(set(range(MAX_MASK_BIT + 1)) - set(planes.values()))
            if not free:
                msg = f"no free mask bit left for plane {name!r}"
                raise ExposureError(msg)
            planes[name] = free[0]
        return replace(self, mask_planes=planes)

    def with_(self, **changes: Any) -> Exposure:
        """Return a new exposure with some fields replaced (validated again)."""
        return replace(self, **changes)


def flag_unusable_variance(exposure: Exposure) -> tuple[Exposure, int]:
    """Flag pixels whose variance is <= 0 or not finite ``NO_DATA`` (variance +inf).

    image: unchanged; variance: such pixels become +inf (a weight of 0 everywhere
    downstream); mask: they gain ``NO_DATA``. Such a variance cannot weight a fit (1/0)
    or be propagated. Returns the exposure (``exposure`` itself when nothing is flagged)
    and the number of flagged pixels whose image value is finite.
    """
    with np.errstate(invalid="ignore"):
        bad = ~(exposure.variance > 0) | ~np.isfinite(exposure.variance)
    if not bad.any():
        return exposure, 0
    n_bad = int(np.count_nonzero(bad & np.isfinite(exposure.image)))
    exp = exposure.with_planes(["NO_DATA"])
    mask = exp.mask.copy()
    mask[bad] |= np.int32(1 << exp.mask_planes["NO_DATA"])
    variance = np.where(bad, np.inf, exp.variance).astype(exp.variance.dtype)
    return exp.with_(mask=mask, variance=variance), n_bad


def planes_bitmask(numberings: Iterable[Mapping[str, int]], planes: Iterable[str]) -> int:
    """OR of the bits of ``planes`` in every numbering of ``numberings`` (absent planes skipped).

    Stamps cut from two exposures keep both masks; a plane may have a different bit in
    each, so a test for "any bad plane" needs the bits of both numberings.
    """
    planes = tuple(planes)
    bits = 0
    for numbering in numberings:
        bits |= sum(1 << numbering[p] for p in planes if p in numbering)
    return bits
