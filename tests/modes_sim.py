"""Simulated pairs for the subtraction-mode tests (convolveScience, decorrelation, score).

A pair with the blurrier *template* is here the forward simulation with the roles
swapped (template := the blurred image, science := the sharp image), which for equal
skies and no transients is exactly what ``SimulationParams(blurrier="template")`` writes.
Its truth kernel then maps the science image onto the template, ``T = K ⋆ S + b``:
exactly the kernel convolveScience fits, with sum ``photometric_scale`` (template counts
per science count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from psfmatch import synth
from psfmatch.exposure import Exposure
from psfmatch.kernel import SpatialKernel
from psfmatch.spatial import SpatialFunction

SKY = 200.0  #: both images, ADU; gain 1, read noise 4 e-: pixel noise sqrt(216) ADU


def params(**overrides) -> synth.SimulationParams:
    """A small, sky-dominated pair whose template is as noisy as the science image."""
    base = {"seed": 3, "shape": (512, 512), "star_density": 400.0, "galaxy_density": 50.0,
            "flux_max": 2.0e5, "n_cosmic_rays": 0, "bad_column": None, "sky_template": SKY,
            "sky_science": SKY, "n_transients": 0, "n_variables": 0}
    return synth.SimulationParams(**{**base, **overrides})


@dataclass(frozen=True)
class Pair:
    """A simulated pair in astronomical roles with its exact truth kernel."""

    template: Exposure
    science: Exposure
    kernel: SpatialKernel  # convolved image -> other image, with the background
    truth: synth.Truth
    convolved: str  # "template" (forward pair) or "science" (swapped pair)


def truth_spatial_kernel(truth: synth.Truth) -> SpatialKernel:
    """The truth kernel and background as a :class:`SpatialKernel` (exact).

    The simulator's weights :math:`w_{1,2} = (1 \\mp m)/2` with
    :math:`m = a (x - c_x)/h_x + c (y - c_y)/h_y` and its background are linear in
    ``x, y``, i.e. order-1 raw polynomials.
    """
    k = truth.kernel
    (cx, cy), (hx, hy), (a, c) = k.centre, k.half_extent, k.direction
    m = np.array([-(a * cx / hx + c * cy / hy), a / hx, c / hy])
    one = np.array([1.0, 0.0, 0.0])
    coeffs = np.stack([0.5 * (one - m), 0.5 * (one + m)])
    b0, bx, by = truth.background
    bg = np.array([b0 - bx * cx / hx - by * cy / hy, bx / hx, by / hy])
    ny, nx = truth.params.shape
    x0, y0 = truth.params.xy0
    fn = SpatialFunction(1, "polynomial", (x0, y0, x0 + nx - 1, y0 + ny - 1))
    return SpatialKernel(np.stack(k.basis), coeffs, fn, bg, fn)


def make(p: synth.SimulationParams, *, swapped: bool) -> Pair:
    """Forward pair (sharp template) or the same pair with roles swapped."""
    pair = synth.make_pair(p)
    kernel = truth_spatial_kernel(pair.truth)
    if swapped:
        return Pair(pair.science, pair.template, kernel, pair.truth, "science")
    return Pair(pair.template, pair.science, kernel, pair.truth, "template")


def signal(exposure: Exposure, p: synth.SimulationParams) -> np.ndarray:
    """Noiseless source signal (ADU) recovered from the expected-variance plane.

    The simulator's variance is :math:`(I + {\\rm sky})/g + (r/g)^2`, so
    :math:`I = g (V - (r/g)^2) - {\\rm sky}` (background included for the science image).
    """
    sky = p.sky_science if exposure.metadata.get("SIMROLE") == "science" else p.sky_template
    return p.gain * (exposure.variance.astype(np.float64) - (p.read_noise / p.gain) ** 2) - sky


def blank_sky(pair: Pair, p: synth.SimulationParams, *, border: int, fraction: float = 0.01
              ) -> np.ndarray:
    """Pixels where neither image has source signal above ``fraction`` of its noise σ.

    The science image's background (truth) is not a source; ``border`` pixels at the edges
    (the convolution's invalid border and beyond) are excluded.
    """
    ny, nx = p.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    bg = pair.truth.background_at(xx + p.xy0[0], yy + p.xy0[1])
    sigma = math.sqrt(SKY / p.gain + (p.read_noise / p.gain) ** 2)
    ok = np.ones((ny, nx), dtype=bool)
    for exp in (pair.template, pair.science):
        sig = signal(exp, p)
        if exp.metadata.get("SIMROLE") == "science":
            sig = sig - bg
        ok &= np.abs(sig) < fraction * sigma
    ok[:border, :] = ok[-border:, :] = ok[:, :border] = ok[:, -border:] = False
    return ok


def lag1(z: np.ndarray, good: np.ndarray) -> tuple[float, float]:
    """Lag-1 autocorrelation coefficients ``(along x, along y)`` of ``z`` over ``good`` pixels.

    :math:`\\rho_1 = \\langle \\delta z_i \\delta z_{i+1} \\rangle / \\langle \\delta z^2 \\rangle`
    over neighbouring pairs that are both good; its noise is about :math:`1/\\sqrt N`.
    """
    d = np.where(good, z - z[good].mean(), 0.0)
    var = float(np.mean(d[good] ** 2))
    bx, by = good[:, 1:] & good[:, :-1], good[1:, :] & good[:-1, :]
    return (float((d[:, 1:] * d[:, :-1])[bx].mean() / var),
            float((d[1:, :] * d[:-1, :])[by].mean() / var))
