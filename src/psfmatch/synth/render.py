"""Rendering: pixel-integrated Gaussian stars, elliptical galaxies, the simulated PSF."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import erf

from psfmatch.basis import SIGMA_TO_FWHM
from psfmatch.synth.params import STAMP_NSIGMA, SimulationParams
from psfmatch.synth.truth import TruthKernel


def science_psf_fwhm_at(params: SimulationParams, x: Any, y: Any) -> np.ndarray:
    """Second-moment FWHM :math:`2.355 \\sqrt{\\sigma_T^2 + \\sigma_K^2(1 + d m)}` (px).

    The blurred image's PSF: the science image's, or the template's for
    ``blurrier="template"`` (:math:`\\sigma_T` is then the science image's width).
    """
    kernel = TruthKernel.from_params(params)
    sig_t = params.sharp_fwhm / SIGMA_TO_FWHM
    w = kernel.weights_at(x, y)
    var = sum(wj * s**2 for wj, s in zip(w, kernel.sigmas, strict=True))
    return SIGMA_TO_FWHM * np.sqrt(sig_t**2 + var)


def render_gaussians(image: np.ndarray, x: Any, y: Any, flux: Any, sigma: Any, *,
                     xy0: tuple[int, int] = (0, 0), chunk: int = 4_000_000) -> np.ndarray:
    """Add pixel-integrated circular Gaussians to ``image`` in place (and return it).

    Each source contributes ``flux * Px(col) * Py(row)`` with
    ``Px(i) = [erf((i + 1/2 - x) / (sqrt(2) sigma)) - erf((i - 1/2 - x) / (sqrt(2) sigma))] / 2``
    on a stamp of ±6 sigma; ``x, y`` are parent coordinates.
    """
    x, y, flux, sigma = np.broadcast_arrays(*(np.atleast_1d(np.asarray(a, dtype=np.float64))
                                              for a in (x, y, flux, sigma)))
    if x.size == 0:
        return image
    ny, nx = image.shape
    col, row = x - xy0[0], y - xy0[1]
    half = int(math.ceil(STAMP_NSIGMA * sigma.max()))
    keep = (col > -half - 1) & (col < nx + half) & (row > -half - 1) & (row < ny + half)
    col, row, flux, sigma = col[keep], row[keep], flux[keep], sigma[keep]
    offs = np.arange(-half, half + 1)
    step = max(1, chunk // offs.size**2)
    for s in range(0, col.size, step):
        sl = slice(s, s + step)
        profiles = []
        for c in (col[sl], row[sl]):
            idx = np.rint(c).astype(np.int64)[:, None] + offs
            z = 1.0 / (math.sqrt(2.0) * sigma[sl, None])
            profiles.append((idx, 0.5 * (erf((idx + 0.5 - c[:, None]) * z)
                                         - erf((idx - 0.5 - c[:, None]) * z))))
        (ix, px), (iy, py) = profiles
        stamps = flux[sl, None, None] * py[:, :, None] * px[:, None, :]
        ii = np.broadcast_to(ix[:, None, :], stamps.shape)
        jj = np.broadcast_to(iy[:, :, None], stamps.shape)
        ok = (ii >= 0) & (ii < nx) & (jj >= 0) & (jj < ny)
        image += np.bincount(jj[ok] * nx + ii[ok], weights=stamps[ok],
                             minlength=nx * ny).reshape(ny, nx)
    return image


def render_ellipses(image: np.ndarray, x: np.ndarray, y: np.ndarray, flux: np.ndarray,
                     cov: np.ndarray, xy0: tuple[int, int]) -> None:
    """Add point-sampled elliptical Gaussians with covariances ``cov + I/12`` (pixel box)."""
    ny, nx = image.shape
    cov = cov + np.eye(2) / 12.0
    for k in range(x.size):
        c = cov[k]
        half = int(math.ceil(STAMP_NSIGMA * math.sqrt(np.linalg.eigvalsh(c).max())))
        ic, jc = round(x[k] - xy0[0]), round(y[k] - xy0[1])
        ii, jj = np.meshgrid(np.arange(ic - half, ic + half + 1),
                             np.arange(jc - half, jc + half + 1))
        ok = (ii >= 0) & (ii < nx) & (jj >= 0) & (jj < ny)
        if not ok.any():
            continue
        dx, dy = ii[ok] + xy0[0] - x[k], jj[ok] + xy0[1] - y[k]
        inv = np.linalg.inv(c)
        q = inv[0, 0] * dx * dx + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy * dy
        val = flux[k] * np.exp(-0.5 * q) / (2 * math.pi * math.sqrt(np.linalg.det(c)))
        image[jj[ok], ii[ok]] += val


def gaussian_psf_image(fwhm: float, size: int, *, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """Unit-sum, pixel-integrated Gaussian of ``fwhm`` on an odd ``size`` stamp."""
    if size % 2 == 0 or size < 1:
        raise ValueError(f"size must be a positive odd integer, got {size!r}")
    img = np.zeros((size, size))
    c = size // 2
    render_gaussians(img, c + dx, c + dy, 1.0, fwhm / SIGMA_TO_FWHM)
    return img / img.sum()


@dataclass(frozen=True)
class SimulatedPsf:
    """PSF model: template Gaussian or (``kernel`` given) its mixture with the kernel."""

    sigma_template: float
    kernel: TruthKernel | None = None
    size: int = 31

    def _components(self, x: float, y: float) -> tuple[np.ndarray, ...]:
        """Weights, sigmas and offsets ``(dx, dy)`` of the Gaussian components."""
        if self.kernel is None:
            return np.array([1.0]), np.array([self.sigma_template]), np.zeros(1), np.zeros(1)
        w = self.kernel.weights_at(x, y)
        s = np.sqrt(self.sigma_template**2 + np.asarray(self.kernel.sigmas) ** 2)
        parts = [(wj * f, sj, -dx, -dy) for f, dx, dy in self.kernel.peaks()
                 for wj, sj in zip(w, s, strict=True)]
        return tuple(np.array(col, dtype=np.float64) for col in zip(*parts, strict=True))

    @property
    def fwhm(self) -> float:
        """Second-moment FWHM at the image centre (px), about the PSF centroid."""
        c = self.kernel.centre if self.kernel else (0.0, 0.0)
        w, s, dx, dy = self._components(*c)
        mx, my = np.sum(w * dx), np.sum(w * dy)
        second = np.sum(w * (s**2 + 0.5 * ((dx - mx) ** 2 + (dy - my) ** 2)))
        return float(SIGMA_TO_FWHM * np.sqrt(second))

    def image_at(self, x: float, y: float) -> np.ndarray:
        """Unit-sum ``size x size`` image (main peak on the stamp centre)."""
        img = np.zeros((self.size, self.size))
        w, s, dx, dy = self._components(x, y)
        c = self.size // 2
        render_gaussians(img, c + dx, c + dy, w, s)
        return img / img.sum()


