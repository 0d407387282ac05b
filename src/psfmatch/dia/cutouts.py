"""Cut-outs (alert-style stamps) of science, matched template and difference per source."""

from __future__ import annotations

import math

import numpy as np

from psfmatch.errors import ConfigError
from psfmatch.exposure import Exposure

__all__ = ["cutout", "make_cutouts"]


def cutout(exposure: Exposure, x: float, y: float, size: int, *,
           plane: str = "image") -> tuple[np.ndarray, int, int]:
    """``size × size`` float32 stamp of ``exposure.<plane>`` centred on parent ``(x, y)``.

    The centre pixel is ``floor(x + 0.5), floor(y + 0.5)``; pixels outside the
    exposure are NaN. ``plane`` is ``"image"`` or ``"variance"``. Returns the stamp and
    the parent coordinates of its ``[0, 0]`` element.
    """
    half = size // 2
    cx, cy = math.floor(x + 0.5), math.floor(y + 0.5)
    x0, y0 = cx - half, cy - half
    out = np.full((size, size), np.nan, dtype=np.float32)
    arr = getattr(exposure, plane)
    ny, nx = arr.shape
    c0, r0 = x0 - exposure.xy0[0], y0 - exposure.xy0[1]
    ra, rb = max(r0, 0), min(r0 + size, ny)
    ca, cb = max(c0, 0), min(c0 + size, nx)
    if ra < rb and ca < cb:
        out[ra - r0:rb - r0, ca - c0:cb - c0] = arr[ra:rb, ca:cb]
    return out, int(x0), int(y0)


def make_cutouts(
    x: np.ndarray,
    y: np.ndarray,
    *,
    difference: Exposure,
    science: Exposure | None = None,
    template: Exposure | None = None,
    size: int = 63,
) -> dict[str, np.ndarray]:
    """Stamps of each source in the difference, science and matched template.

    Exposures are only read; they must share the difference's pixel grid (same
    ``xy0`` frame), as the subtraction products do.

    Parameters
    ----------
    x, y : array_like
        Parent positions (catalogue ``x``, ``y``).
    difference, science, template : Exposure
        Images to cut; a missing one gives all-NaN stamps.
    size : int
        Odd stamp side (px).

    Returns
    -------
    dict
        ``"difference"``, ``"science"``, ``"template"``: float32 ``(n, size, size)``;
        ``"x0"``, ``"y0"``: int64 parent coordinates of each stamp's ``[0, 0]``.

    Raises
    ------
    ConfigError
        If ``size`` is not a positive odd integer.
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1 \
            or size % 2 == 0:
        raise ConfigError(f"dia option cutout_size must be a positive odd integer, got {size!r}")
    xs = np.atleast_1d(np.asarray(x, dtype=np.float64))
    ys = np.atleast_1d(np.asarray(y, dtype=np.float64))
    n = xs.size
    out: dict[str, np.ndarray] = {}
    for name, exp in (("science", science), ("template", template), ("difference", difference)):
        stack = np.full((n, size, size), np.nan, dtype=np.float32)
        if exp is not None:
            for i in range(n):
                stack[i] = cutout(exp, xs[i], ys[i], size)[0]
        out[name] = stack
    half = size // 2
    out["x0"] = (np.floor(xs + 0.5) - half).astype(np.int64)
    out["y0"] = (np.floor(ys + 0.5) - half).astype(np.int64)
    return out
