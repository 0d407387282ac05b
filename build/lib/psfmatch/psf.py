"""PSF models that live in memory (no file I/O here; :mod:`psfmatch.io` persists them).

Only the constant-image model is defined so far: :class:`ImagePsf`, which satisfies
:class:`psfmatch.exposure.PsfModel`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from psfmatch.basis import SIGMA_TO_FWHM
from psfmatch.errors import ExposureError

__all__ = ["ImagePsf"]


@dataclass(frozen=True, eq=False)
class ImagePsf:
    """A spatially constant PSF given by one pixelised image.

    Parameters
    ----------
    image : array_like
        2-D, odd-sized in both axes, finite, with a positive sum. It is copied to
        float64, normalised to unit sum and made read-only at construction.

    Raises
    ------
    ExposureError
        If the image is not 2-D, has an even size, non-finite values or a sum <= 0.
    """

    image: np.ndarray

    def __post_init__(self) -> None:
        image = np.array(self.image, dtype=np.float64)
        if image.ndim != 2:
            msg = f"PSF image must be 2-D, got {image.ndim}-D array of shape {image.shape}"
            raise ExposureError(msg)
        if image.shape[0] % 2 == 0 or image.shape[1] % 2 == 0:
            msg = f"PSF image must have odd sizes, got shape {image.shape}"
            raise ExposureError(msg)
        if not np.all(np.isfinite(image)):
            msg = f"PSF image has {int(np.sum(~np.isfinite(image)))} non-finite pixels"
            raise ExposureError(msg)
        total = float(image.sum())
        if not total > 0.0:
            msg = f"PSF image sum must be > 0 to normalise, got {total!r}"
            raise ExposureError(msg)
        image /= total
        image.flags.writeable = False
        object.__setattr__(self, "image", image)

    def image_at(self, x: float, y: float) -> np.ndarray:
        """Return the (read-only, unit-sum) PSF image; the model is the same everywhere.

        Parameters
        ----------
        x, y : float
            Parent pixel position (ignored: the model is constant).

        Returns
        -------
        numpy.ndarray
            The normalised PSF image.
        """
        return self.image

    @property
    def fwhm(self) -> float:
        """Gaussian-equivalent FWHM in pixels from the image second moments.

        ``2.3548 * sqrt((Ixx + Iyy) / 2)``, with moments about the image centroid.
        """
        ny, nx = self.image.shape
        y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
        w = self.image
        xc = float(np.sum(w * x))
        yc = float(np.sum(w * y))
        ixx = float(np.sum(w * (x - xc) ** 2))
        iyy = float(np.sum(w * (y - yc) ** 2))
        return float(SIGMA_TO_FWHM * np.sqrt(max((ixx + iyy) / 2.0, 0.0)))
