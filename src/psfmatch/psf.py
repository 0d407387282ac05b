"""PSF models that live in memory (no file I/O here; :mod:`psfmatch.io.psfs` reads them).

Every model satisfies :class:`psfmatch.exposure.PsfModel`: ``image_at(x, y)`` returns a
unit-sum, odd-sized kernel image *centred on its central pixel* (afw's
``computeKernelImage``: the position only selects the spatial variation, there is no
sub-pixel shift), and ``fwhm`` is a width in pixels.

* :class:`ImagePsf`: one constant pixelised image;
* :class:`GaussianPsf`, :class:`MoffatPsf`, :class:`DoubleGaussianPsf`: analytic, sampled
  at pixel centres on a ``size × size`` stamp (meas_algorithms ``SingleGaussianPsf`` /
  ``DoubleGaussianPsf`` convention); they can be :meth:`resized`, as afw analytic PSFs can;
* :class:`PsfexPsf`: a PSFEx model (a polynomial in image position of sampled component
  images), evaluated with the file's own polynomial, sampling step and centring.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from psfmatch.basis import SIGMA_TO_FWHM
from psfmatch.errors import ExposureError
from psfmatch.moments import adaptive_fwhm, moments_fwhm

__all__ = [
    "DoubleGaussianPsf",
    "GaussianPsf",
    "ImagePsf",
    "MoffatPsf",
    "PsfexPsf",
    "adaptive_fwhm",
    "embed_centred",
    "moments_fwhm",
]


def embed_centred(image: np.ndarray, size: int) -> np.ndarray:
    """Embed an odd-sized ``image`` centred in a ``size × size`` zero image (ip_diffim padding).

    The offset is ``(size − w) // 2`` on each axis, so the central pixel stays central.

    Raises
    ------
    ValueError
        If ``image`` is larger than ``size`` on either axis (it cannot be embedded).
    """
    image = np.asarray(image, dtype=np.float64)
    ny, nx = image.shape
    if ny > size or nx > size:
        msg = f"a {nx}x{ny} PSF image cannot be embedded in {size}x{size}"
        raise ValueError(msg)
    out = np.zeros((size, size))
    oy, ox = (size - ny) // 2, (size - nx) // 2
    out[oy : oy + ny, ox : ox + nx] = image
    return out


def _radius2(size: int) -> np.ndarray:
    h = size // 2
    offsets = np.arange(-h, h + 1, dtype=np.float64)
    return offsets[None, :] ** 2 + offsets[:, None] ** 2


def _check_size(size: int, what: str) -> None:
    if not isinstance(size, int | np.integer) or size < 1 or size % 2 == 0:
        msg = f"{what} size must be a positive odd integer, got {size!r}"
        raise ExposureError(msg)


def _default_size(width: float) -> int:
    """Odd stamp covering ±4 widths: ``2·ceil(4·width) + 1``."""
    return 2 * math.ceil(4.0 * width) + 1


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
        return moments_fwhm(self.image)

    def describe(self) -> dict[str, object]:
        """JSON-able description (kind and shape)."""
        return {"model": "image", "shape": list(self.image.shape)}


class _Analytic:
    """Shared behaviour of the analytic models: a constant image of ``size`` pixels."""

    size: int

    def _profile(self, r2: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def image(self) -> np.ndarray:
        """The unit-sum ``size × size`` image (sampled at pixel centres)."""
        img = self._profile(_radius2(self.size))
        return img / img.sum()

    def image_at(self, x: float, y: float) -> np.ndarray:
        """The same unit-sum image at every position (``x``, ``y`` are ignored)."""
        return self.image

    def resized(self, size: int) -> _Analytic:
        """The same model on a ``size × size`` stamp (afw ``Psf.resized``)."""
        _check_size(size, type(self).__name__)
        return dataclasses.replace(self, size=int(size))  # type: ignore[type-var]

    def describe(self) -> dict[str, object]:
        """JSON-able description: the model kind and its parameters."""
        return {"model": self.kind, **dataclasses.asdict(self)}  # type: ignore[call-overload, attr-defined]


@dataclass(frozen=True)
class GaussianPsf(_Analytic):
    """Circular Gaussian of the given FWHM (px), sampled at pixel centres.

    :math:`I(r) \\propto \\exp(-r^2 / 2\\sigma^2)`,
    :math:`\\sigma = \\mathrm{FWHM}/2\\sqrt{2\\ln 2}`.
    ``size`` defaults to ``2·ceil(4σ) + 1``.
    """

    fwhm: float
    size: int = 0
    kind = "gaussian"

    def __post_init__(self) -> None:
        if not self.fwhm > 0:
            msg = f"Gaussian PSF fwhm must be > 0, got {self.fwhm!r}"
            raise ExposureError(msg)
        if self.size == 0:
            object.__setattr__(self, "size", _default_size(self.sigma))
        _check_size(self.size, "Gaussian PSF")

    @property
    def sigma(self) -> float:
        """Gaussian sigma (px)."""
        return self.fwhm / SIGMA_TO_FWHM

    def _profile(self, r2: np.ndarray) -> np.ndarray:
        return np.exp(-r2 / (2.0 * self.sigma**2))


@dataclass(frozen=True)
class MoffatPsf(_Analytic):
    """Moffat profile :math:`I(r) \\propto (1 + r^2/\\alpha^2)^{-\\beta}`, sampled at pixel centres.

    :math:`\\alpha = \\mathrm{FWHM} / (2\\sqrt{2^{1/\\beta} - 1})`. ``size`` defaults to
    ``2·ceil(4·FWHM) + 1`` (Moffat wings are broad).
    """

    fwhm: float
    beta: float
    size: int = 0
    kind = "moffat"

    def __post_init__(self) -> None:
        if not self.fwhm > 0:
            msg = f"Moffat PSF fwhm must be > 0, got {self.fwhm!r}"
            raise ExposureError(msg)
        if not self.beta > 1:
            msg = f"Moffat PSF beta must be > 1, got {self.beta!r}"
            raise ExposureError(msg)
        if self.size == 0:
            object.__setattr__(self, "size", _default_size(self.fwhm))
        _check_size(self.size, "Moffat PSF")

    @property
    def alpha(self) -> float:
        """Moffat core radius (px)."""
        return self.fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / self.beta) - 1.0))

    def _profile(self, r2: np.ndarray) -> np.ndarray:
        return (1.0 + r2 / self.alpha**2) ** (-self.beta)


@dataclass(frozen=True)
class DoubleGaussianPsf(_Analytic):
    """meas_algorithms ``DoubleGaussianPsf(size, size, sigma1, sigma2, b)``.

    :math:`I(r) \\propto \\exp(-r^2/2\\sigma_1^2) + b\\,\\exp(-r^2/2\\sigma_2^2)` (afw
    ``DoubleGaussianFunction2``: ``b`` is the ratio of the peak heights), sampled at pixel
    centres and normalised to unit sum. As in meas_algorithms, ``sigma2 = 0`` with
    ``b = 0`` is a single Gaussian of ``sigma1``.
    """

    sigma1: float
    sigma2: float = 0.0
    b: float = 0.0
    size: int = 0
    kind = "double_gaussian"

    def __post_init__(self) -> None:
        if not self.sigma1 > 0:
            msg = f"double-Gaussian PSF sigma1 must be > 0, got {self.sigma1!r}"
            raise ExposureError(msg)
        if self.b < 0 or self.sigma2 < 0 or (self.b > 0 and self.sigma2 == 0):
            msg = (
                "double-Gaussian PSF needs b >= 0 and sigma2 > 0 when b > 0, got "
                f"sigma2={self.sigma2!r}, b={self.b!r}"
            )
            raise ExposureError(msg)
        if self.size == 0:
            object.__setattr__(self, "size", _default_size(max(self.sigma1, self.sigma2)))
        _check_size(self.size, "double-Gaussian PSF")

    def _profile(self, r2: np.ndarray) -> np.ndarray:
        out = np.exp(-r2 / (2.0 * self.sigma1**2))
        if self.b > 0:
            out = out + self.b * np.exp(-r2 / (2.0 * self.sigma2**2))
        return out

    @property
    def fwhm(self) -> float:
        """Full width at half maximum of the radial profile (px), by bisection."""
        peak = float(self._profile(np.zeros(1))[0])
        lo, hi = 0.0, 10.0 * max(self.sigma1, self.sigma2)
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            if self._profile(np.array([mid * mid]))[0] > 0.5 * peak:
                lo = mid
            else:
                hi = mid
        return 2.0 * 0.5 * (lo + hi)


def _lanczos3(d: np.ndarray) -> np.ndarray:
    """Lanczos-3 interpolant :math:`\\mathrm{sinc}(d)\\,\\mathrm{sinc}(d/3)` for |d| < 3, else 0."""
    return np.where(np.abs(d) < 3.0, np.sinc(d) * np.sinc(d / 3.0), 0.0)


def _resampling_matrix(n_samples: int, sample_positions: np.ndarray) -> np.ndarray:
    """Rows of Lanczos-3 weights (PSFEx ``vignet_resample``) for each sample-grid position.

    Taps are the 6 samples ``floor(s) − 2 … floor(s) + 3`` that lie in the grid; their
    weights are renormalised to sum 1, as PSFEx does near the grid edge.
    """
    out = np.zeros((sample_positions.size, n_samples))
    for row, s in enumerate(sample_positions):
        base = math.floor(s)
        taps = np.arange(base - 2, base + 4)
        taps = taps[(taps >= 0) & (taps < n_samples)]
        if taps.size == 0:
            continue
        w = _lanczos3(taps - s)
        total = w.sum()
        out[row, taps] = w / total if total > 0 else w
    return out


@dataclass(frozen=True, eq=False)
class PsfexPsf:
    """A PSFEx model: sampled component images combined by a polynomial in position.

    At parent pixel ``(x, y)`` (0-based, afw) the context variables are PSFEx's 1-based
    image coordinates :math:`X = x + 1`, :math:`Y = y + 1`, scaled as
    :math:`\\hat X = (X - \\mathrm{POLZERO1})/\\mathrm{POLSCAL1}` (same for Y). The sampled
    PSF is :math:`S = \\sum_k c_k(\\hat X, \\hat Y) C_k` with the monomials in PSFEx
    order ``1, X̂, X̂², …, Ŷ, X̂Ŷ, …, Ŷ²,…`` (x powers fastest, total degree ≤ POLDEG1).
    ``S`` is sampled every ``PSF_SAMP`` image pixels and centred on sample
    ``(n_x // 2, n_y // 2)``; the pixel image centred on a pixel centre is
    :math:`P(u, v) = S(n_x//2 + u/\\mathrm{samp},\\ n_y//2 + v/\\mathrm{samp})`, interpolated
    with PSFEx's Lanczos-3 (``vignet_resample``), for
    :math:`|u|, |v| \\le h = \\lfloor (n//2)\\,\\mathrm{samp} \\rfloor`, then normalised to
    unit sum.

    Attributes
    ----------
    components : ndarray, shape (n_comp, n_y, n_x)
        ``PSF_MASK``.
    degree : int
        ``POLDEG1``.
    zero, scale : tuple of float
        ``(POLZERO1, POLZERO2)`` and ``(POLSCAL1, POLSCAL2)``.
    sampling : float
        ``PSF_SAMP`` (image pixels per sample).
    file_fwhm : float or None
        ``PSF_FWHM`` recorded in the file (px), for checks.
    source : str
        Where the model came from (for messages).
    """

    components: np.ndarray
    degree: int
    zero: tuple[float, float]
    scale: tuple[float, float]
    sampling: float
    file_fwhm: float | None = None
    source: str = "PSFEx model"

    def __post_init__(self) -> None:
        comps = np.array(self.components, dtype=np.float64)
        if comps.ndim != 3:
            msg = f"{self.source}: PSF_MASK must be 3-D (n_comp, ny, nx), got shape {comps.shape}"
            raise ExposureError(msg)
        expected = (self.degree + 1) * (self.degree + 2) // 2
        if comps.shape[0] != expected:
            msg = (
                f"{self.source}: POLDEG1 = {self.degree} needs {expected} PSF_MASK components, "
                f"found {comps.shape[0]}"
            )
            raise ExposureError(msg)
        if not np.all(np.isfinite(comps)):
            msg = f"{self.source}: PSF_MASK has non-finite values"
            raise ExposureError(msg)
        if not self.sampling > 0 or not all(s != 0 for s in self.scale):
            msg = (f"{self.source}: PSF_SAMP and POLSCAL must be non-zero, "
                   f"got {self.sampling}, {self.scale}")
            raise ExposureError(msg)
        comps.flags.writeable = False
        object.__setattr__(self, "components", comps)
        ny, nx = comps.shape[1:]
        half = min(math.floor((nx // 2) * self.sampling), math.floor((ny // 2) * self.sampling))
        if half < 1:
            msg = (f"{self.source}: a {nx}x{ny} PSF_MASK at PSF_SAMP {self.sampling} "
                   "covers < 3 pixels")
            raise ExposureError(msg)
        offsets = np.arange(-half, half + 1, dtype=np.float64) / self.sampling
        object.__setattr__(self, "_wx", _resampling_matrix(nx, nx // 2 + offsets))
        object.__setattr__(self, "_wy", _resampling_matrix(ny, ny // 2 + offsets))

    @property
    def size(self) -> int:
        """Width (= height) of the pixel images :meth:`image_at` returns."""
        return int(self._wx.shape[0])  # type: ignore[attr-defined]

    def terms(self, x: float, y: float) -> np.ndarray:
        """Polynomial terms at parent pixel ``(x, y)``, PSFEx order."""
        xs = (x + 1.0 - self.zero[0]) / self.scale[0]
        ys = (y + 1.0 - self.zero[1]) / self.scale[1]
        return np.array(
            [xs**px * ys**py for py in range(self.degree + 1) for px in range(self.degree + 1 - py)]
        )

    def sampled_at(self, x: float, y: float) -> np.ndarray:
        """The PSF on the model's own sample grid at parent pixel ``(x, y)`` (not normalised)."""
        return np.tensordot(self.terms(x, y), self.components, axes=1)

    def image_at(self, x: float, y: float) -> np.ndarray:
        """Unit-sum pixel image, centred on its central pixel, at parent pixel ``(x, y)``."""
        img = self._wy @ self.sampled_at(x, y) @ self._wx.T  # type: ignore[attr-defined]
        total = float(img.sum())
        if not total > 0:
            msg = f"{self.source}: PSF at ({x:.1f}, {y:.1f}) has sum {total!r} <= 0"
            raise ExposureError(msg)
        return img / total

    @property
    def centre(self) -> tuple[float, float]:
        """Parent position of the polynomial's origin (``POLZERO − 1``)."""
        return (self.zero[0] - 1.0, self.zero[1] - 1.0)

    @property
    def fwhm(self) -> float:
        """Adaptive-moments FWHM (px) of the pixel image at :attr:`centre`."""
        return adaptive_fwhm(self.image_at(*self.centre))

    def describe(self) -> dict[str, object]:
        """JSON-able description of the model."""
        return {"model": "psfex", "source": self.source, "degree": self.degree,
                "zero": list(self.zero), "scale": list(self.scale), "sampling": self.sampling,
                "mask_shape": list(self.components.shape), "file_fwhm": self.file_fwhm}


def analytic_psf(spec: dict) -> GaussianPsf | MoffatPsf | DoubleGaussianPsf:
    """An analytic model from a config mapping (``model`` plus its parameters).

    ``{"model": "gaussian", "fwhm": f}``, ``{"model": "moffat", "fwhm": f, "beta": b}``,
    ``{"model": "double_gaussian", "sigma1": s1, "sigma2": s2, "b": b}`` (or ``fwhm``
    instead of ``sigma1``, meaning a single Gaussian core of that FWHM); ``size`` optional.
    """
    kind = spec.get("model")
    size = int(spec.get("size", 0))
    if kind == "gaussian":
        return GaussianPsf(fwhm=float(spec["fwhm"]), size=size)
    if kind == "moffat":
        return MoffatPsf(fwhm=float(spec["fwhm"]), beta=float(spec["beta"]), size=size)
    if kind == "double_gaussian":
        sigma1 = spec.get("sigma1")
        if sigma1 is None:
            sigma1 = float(spec["fwhm"]) / SIGMA_TO_FWHM
        return DoubleGaussianPsf(sigma1=float(sigma1), sigma2=float(spec.get("sigma2", 0.0)),
                                 b=float(spec.get("b", 0.0)), size=size)
    msg = f"unknown analytic PSF model {kind!r}; use gaussian, moffat or double_gaussian"
    raise ExposureError(msg)
