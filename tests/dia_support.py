"""Difference images of simulated pairs made with the simulator's own (true) kernel.

The DIA tests need a difference image but not the kernel fit: :func:`true_difference`
writes the simulator's truth kernel and background as a
:class:`~psfmatch.kernel.SpatialKernel` (the weights of its two basis Gaussians and the
background are linear in parent ``x, y``, i.e. an order-1 polynomial) and runs the
production convolution and subtraction (:mod:`psfmatch.subtract`) with it, so masks,
``EDGE``, ``SAT_TEMPLATE`` and the variance plane are exactly what the workflow makes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from psfmatch.exposure import Exposure
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
