"""Difference images for the DIA tests: simulated pairs with the simulator's own (true)
kernel, and ZTF alert stamps with a kernel fitted over the stamp.

The DIA tests need a difference image but not the kernel fit: :func:`true_difference`
writes the simulator's truth kernel and background as a
:class:`~psfmatch.kernel.SpatialKernel` (the weights of its two basis Gaussians and the
background are linear in parent ``x, y``, i.e. an order-1 polynomial) and runs the
production convolution and subtraction (:mod:`psfmatch.subtract`) with it, so masks,
``EDGE``, ``SAT_TEMPLATE`` and the variance plane are exactly what the workflow makes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from psfmatch.basis import SIGMA_TO_FWHM, alard_lupton_basis, choose_alard_lupton
from psfmatch.config import PsfMatchConfig
from psfmatch.dia.filtering import robust_sigma
from psfmatch.exposure import Exposure
from psfmatch.fit import difference_stamp, fit_candidate
from psfmatch.kernel import SpatialKernel
from psfmatch.spatial import SpatialFunction
from psfmatch.subtract import convolve_exposure, prepare_template_mask, subtract
from psfmatch.synth import SimulatedPair, SimulationParams, Truth, TruthKernel, make_pair


@dataclass(frozen=True)
class DiaCase:
    """A simulated pair and the products of subtracting it with the true kernel."""

    pair: SimulatedPair
    matched: Exposure
    difference: Exposure

    @property
    def truth(self) -> Truth:
        return self.pair.truth


def spatial_kernel(truth: Truth, kernel: TruthKernel | None = None) -> SpatialKernel:
    """The truth kernel ``sum_j w_j(x, y) B_j`` and background as a ``SpatialKernel``.

    ``w_j = (1 + s_j m) / 2`` with ``s = (-1, +1)`` and
    ``m = a (x - cx) / hx + c (y - cy) / hy``; background ``b0 + bx u + by v``.
    """
    k = kernel or truth.kernel
    (cx, cy), (hx, hy), (a, c) = k.centre, k.half_extent, k.direction
    bbox = (int(round(cx - hx)), int(round(cy - hy)), int(round(cx + hx)), int(round(cy + hy)))
    func = SpatialFunction(order=1, model_type="polynomial", bbox=bbox)
    coefficients = []
    for s in (-1.0, 1.0):
        coefficients.append([0.5 - 0.5 * s * (a * cx / hx + c * cy / hy),
                             0.5 * s * a / hx, 0.5 * s * c / hy])
    b0, bx, by = truth.background
    background = np.array([b0 - bx * cx / hx - by * cy / hy, bx / hx, by / hy])
    return SpatialKernel(basis=np.stack(k.basis), coefficients=np.array(coefficients),
                         kernel_function=func, background_coefficients=background,
                         background_function=func)


def true_difference(pair: SimulatedPair, kernel: TruthKernel | None = None) -> DiaCase:
    """Convolve the template with the true kernel (or ``kernel``) and subtract."""
    sk = spatial_kernel(pair.truth, kernel)
    matched = convolve_exposure(prepare_template_mask(pair.template), sk)
    difference = subtract(pair.science, matched, sk)
    return DiaCase(pair=pair, matched=matched, difference=difference)


def simulate(**overrides) -> DiaCase:
    """``make_pair`` on a 512² frame with ``overrides`` and its true-kernel difference."""
    params = SimulationParams(**{"shape": (512, 512), **overrides})
    return true_difference(make_pair(params))


# ------------------------------------------------------------------ ZTF alert stamps
def _stamp_variance(image: np.ndarray) -> np.ndarray:
    """Sky noise from the robust sigma, plus photon noise with gain = sky / sigma²."""
    sky = float(np.median(image))
    sigma = robust_sigma(image - sky)
    gain = sky / sigma**2 if sky > sigma**2 else math.inf
    return sigma**2 + np.clip(image - sky, 0.0, None) / gain


def core_fwhm(image: np.ndarray) -> float:
    """FWHM of the brightest peak (away from the edges) from its 4 neighbours.

    For a Gaussian core, mean(neighbours) / peak = exp(-1 / (2 sigma²)).
    """
    im = image - np.median(image)
    inner = im[10:-10, 10:-10]
    r, c = (int(v) + 10 for v in np.unravel_index(np.argmax(inner), inner.shape))
    ratio = np.mean([im[r - 1, c], im[r + 1, c], im[r, c - 1], im[r, c + 1]]) / im[r, c]
    return SIGMA_TO_FWHM * math.sqrt(-0.5 / math.log(ratio))


@dataclass(frozen=True)
class StampDifference:
    """Our difference of a science/template stamp pair, and both images on its grid."""

    difference: Exposure
    science: Exposure
    matched: Exposure
    science_fwhm: float


def stamp_difference(science: np.ndarray, template: np.ndarray, *,
                     centre_radius_fwhm: float = 2.0) -> StampDifference:
    """One Alard-Lupton kernel fitted over a stamp pair with its centre masked, and subtract.

    The pixels within ``centre_radius_fwhm`` science FWHM of the stamp centre get
    (almost) no weight in the fit, so a source there cannot be absorbed into the kernel.
    The valid region starts at stamp pixel ``(half, half)`` (kernel half-size): ``xy0``
    keeps stamp coordinates. ``matched`` is ``science - difference`` (the convolved
    template plus background) with the template part of the variance.
    """
    sci = np.asarray(science, dtype=np.float64)
    tmpl = np.asarray(template, dtype=np.float64)
    var_s, var_t = _stamp_variance(sci), _stamp_variance(tmpl)
    fwhm_s, fwhm_t = core_fwhm(sci), core_fwhm(tmpl)
    cfg = PsfMatchConfig.from_lsst({"kernelSize": 11, "kernelSizeMin": 11, "kernelSizeMax": 11,
                                    "alardSigGauss": [0.7, 1.5, 3.0],
                                    "alardDegGauss": [4, 2, 2]})
    choice = choose_alard_lupton(cfg, target_fwhm=fwhm_t, reference_fwhm=fwhm_s)
    basis = alard_lupton_basis(half_width=choice.kernel_size // 2, sigmas=choice.sigmas,
                               degrees=choice.degrees)
    ny, nx = sci.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    centre = np.hypot(xx - (nx - 1) / 2, yy - (ny - 1) / 2) < centre_radius_fwhm * fwhm_s
    fit_var = np.where(centre, 1e8 * (var_s + var_t), var_s + var_t)
    sol = fit_candidate(tmpl, sci, fit_var, basis, fit_background=True,
                        constant_variance_weighting=False)
    zero = np.zeros(sci.shape, np.int32)
    diff, var, mask = difference_stamp((tmpl, var_t, zero), (sci, var_s, zero), sol.kernel,
                                       sol.background)
    half = choice.kernel_size // 2
    crop = (slice(half, ny - half), slice(half, nx - half))
    difference = Exposure(image=diff.astype(np.float32), mask=mask,
                          variance=var.astype(np.float32), xy0=(half, half))
    science_exp = Exposure(image=sci[crop].astype(np.float32), mask=mask.copy(),
                           variance=var_s[crop].astype(np.float32), xy0=(half, half))
    matched = Exposure(image=(sci[crop] - diff).astype(np.float32), mask=mask.copy(),
                       variance=np.clip(var - var_s[crop], 1e-12, None).astype(np.float32),
                       xy0=(half, half))
    return StampDifference(difference=difference, science=science_exp, matched=matched,
                           science_fwhm=fwhm_s)
