"""What every QA figure shares: :class:`QaPlot`, the zscale/asinh stretch, panel grids."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "REJECTED_COLOUR",
    "REJECTION_MARKERS",
    "UNUSED_COLOUR",
    "USED_COLOUR",
    "QaPlot",
    "grid_shape",
    "show_image",
    "stretch",
    "zscale_limits",
]

#: Marker of each rejection stage (all rejected candidates are drawn in red).
REJECTION_MARKERS: dict[str, str] = {"select": "x", "single": "s", "ksum": "^", "spatial": "D"}
USED_COLOUR = "tab:green"
UNUSED_COLOUR = "tab:cyan"
REJECTED_COLOUR = "red"


@dataclass
class QaPlot:
    """A figure and the data it shows.

    Attributes
    ----------
    figure : matplotlib.figure.Figure
    data : dict
        What was plotted (positions, counts, limits, ...), keyed as each function documents.
    """

    figure: Figure
    data: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- stretch
def zscale_limits(image: np.ndarray, *, contrast: float = 0.25) -> tuple[float, float]:
    """IRAF zscale display limits of the finite pixels of ``image``.

    Returns ``(0, 1)`` for an image without finite pixels.
    """
    from astropy.visualization import ZScaleInterval

    values = np.asarray(image, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = ZScaleInterval(contrast=contrast).get_limits(values)
    if not high > low:
        high = low + 1.0
    return float(low), float(high)


def stretch(low: float, high: float):
    from astropy.visualization import AsinhStretch, ImageNormalize

    return ImageNormalize(vmin=low, vmax=high, stretch=AsinhStretch(a=0.1), clip=True)


def show_image(ax, image: np.ndarray, low: float, high: float, *, origin_xy=(0, 0), cmap="gray"):
    """Display ``image`` in parent pixel coordinates (pixel centres at integers)."""
    h, w = image.shape
    x0, y0 = origin_xy
    extent = (x0 - 0.5, x0 + w - 0.5, y0 - 0.5, y0 + h - 0.5)
    return ax.imshow(image, origin="lower", cmap=cmap, norm=stretch(low, high), extent=extent,
                     interpolation="nearest")


def grid_shape(n: int, *, max_columns: int) -> tuple[int, int]:
    columns = min(n, max_columns) if n > 0 else 1
    return max(1, math.ceil(n / columns)), columns


