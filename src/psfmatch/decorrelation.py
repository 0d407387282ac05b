"""Decorrelation afterburner on exposures (DMTN-021, ip_diffim ``DecorrelateALKernelTask``).

The filter maths is in :mod:`psfmatch.whitening`. Here: which image plays which role, the
mean variances, the variance plane, and an optional grid of kernel positions.

* convolveTemplate: unconvolved image = science (variance :math:`v`), convolved =
  template (:math:`v_t`); :math:`D = S - K \\star T - b`.
* convolveScience: unconvolved = template, convolved = science;
  :math:`D = (K \\star S + b - T)/\\kappa_c`, so the variance plane is divided by
  :math:`\\kappa_c^2`.
* preconvolution (score): convolveTemplate roles with the preconvolution PSF.

:math:`v, v_t` are 3σ-clipped means of the input variance planes over pixels without
``ignoreMaskPlanes``. Image: :math:`\\phi \\star D`. Variance (default): with
:math:`h_1, h_2` the overall filters acting on the unconvolved and convolved inputs,
:math:`V_D = V_{\\rm unconv} \\sum h_1^2 + V_{\\rm conv} \\sum h_2^2` (the original
input planes, per pixel); with ``complete_variance`` each plane is correlated with
:math:`h^2` instead. Mask: unchanged (as ip_diffim). PSF of the whitened difference:
:math:`\\phi * P_{\\rm unconv}`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from psfmatch.exposure import Exposure
from psfmatch.modes import CONVOLVE_SCIENCE, CONVOLVE_TEMPLATE
from psfmatch.stats import clipped_mean_std
from psfmatch.whitening import (
    DecorrelationFilter,
    decorrelated_psf,
    decorrelation_filter,
    fill_non_finite,
    filter_region,
)

__all__ = [
    "IGNORE_MASK_PLANES",
    "Decorrelated",
    "WhiteningPlan",
    "decorrelate",
    "finish_record",
    "mean_variance",
    "node_weights",
    "whitening_plan",
]

#: ``DecorrelateALKernelConfig.ignoreMaskPlanes``: excluded from the mean variances.
IGNORE_MASK_PLANES = ("INTRP", "EDGE", "DETECTED", "SAT", "CR", "BAD", "NO_DATA",
                      "DETECTED_NEGATIVE")


def mean_variance(exposure: Exposure, *, ignore_mask_planes: Sequence[str] = IGNORE_MASK_PLANES
                  ) -> float:
    """Clipped mean (afw ``MEANCLIP``, 3σ, 3 iterations) of the variance plane.

    Pixels with any of ``ignore_mask_planes`` set, or a non-finite image or variance, are
    excluded. NaN when nothing is left.
    """
    bits = exposure.plane_bitmask(ignore_mask_planes)
    good = ((exposure.mask & bits) == 0) & np.isfinite(exposure.variance) \
        & np.isfinite(exposure.image)
    return clipped_mean_std(exposure.variance[good])[0]


def node_weights(coords: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Piecewise-linear (tent) weights of 1-D ``nodes`` at ``coords``.

    Returns an array ``(len(nodes), len(coords))`` summing to 1 over nodes at every
    coordinate; beyond the first/last node the end node has weight 1.
    """
    coords = np.asarray(coords, dtype=np.float64)
    eye = np.eye(len(nodes))
    return np.stack([np.interp(coords, nodes, eye[i]) for i in range(len(nodes))])


@dataclass(frozen=True, eq=False)
class Decorrelated:
    """Outcome of :func:`decorrelate`.

    Attributes
    ----------
    exposure : Exposure
        The whitened difference (or score): new image and variance, the input mask.
    filters : list of DecorrelationFilter
        One per grid node, row-major over ``(ny, nx)`` nodes.
    nodes_x, nodes_y : ndarray
        Parent coordinates of the grid nodes.
    psf_image : ndarray or None
        PSF of the whitened difference at the central node (``None`` if no PSF given).
    info : dict
        JSON-able record: mode, grid, mean variances, kernel sum, gains, expected variance.
    """

    exposure: Exposure
    filters: list[DecorrelationFilter]
    nodes_x: np.ndarray
    nodes_y: np.ndarray
    psf_image: np.ndarray | None
    info: dict[str, Any] = field(default_factory=dict)


def _grid_nodes(bbox: tuple[int, int, int, int], grid: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = (int(g) for g in grid)
    if ny < 1 or nx < 1:
        msg = f"decorrelation grid must be at least (1, 1), got {grid!r}"
        raise ValueError(msg)
    x0, y0, x1, y1 = bbox

    def axis(lo: int, hi: int, n: int) -> np.ndarray:
        # one node: the bbox centre; more: cell centres of n equal cells
        return lo - 0.5 + (hi - lo + 1) * (np.arange(n) + 0.5) / n

    return axis(x0, x1, nx), axis(y0, y1, ny)


@dataclass(frozen=True, eq=False)
class WhiteningPlan:
    """The filters of a decorrelation and its record (:func:`whitening_plan`)."""

    filters: list[DecorrelationFilter]
    nodes_x: np.ndarray
    nodes_y: np.ndarray
    info: dict[str, Any]


def whitening_plan(
    bbox: tuple[int, int, int, int],
    *,
    kernel_at: Callable[[float, float], np.ndarray],
    mode: str,
    grid: tuple[int, int],
    science_variance: float,
    template_variance: float,
    preconvolution_kernel: np.ndarray | None = None,
    complete_variance: bool = False,
) -> WhiteningPlan:
    """The per-node filters of :func:`decorrelate` from the two mean variances.

    ``info`` holds ``skipped`` (and there are no filters) when a mean variance is not
    finite. No pixels are involved: a band-by-band application
    (:mod:`psfmatch.decorrelate_bands`) uses the same plan.
    """
    svar, tvar = science_variance, template_variance
    v, vt = (svar, tvar) if mode == CONVOLVE_TEMPLATE else (tvar, svar)
    info: dict[str, Any] = {"mode": mode, "grid": [int(g) for g in grid],
                            "science_mean_variance": svar, "template_mean_variance": tvar,
                            "preconvolution": preconvolution_kernel is not None,
                            "complete_variance": bool(complete_variance)}
    if not (math.isfinite(v) and math.isfinite(vt)):
        info["skipped"] = "no usable pixels for a mean variance"
        return WhiteningPlan([], np.zeros(0), np.zeros(0), info)
    nodes_x, nodes_y = _grid_nodes(bbox, grid)
    filters = [decorrelation_filter(kernel_at(float(x), float(y)), unconvolved_variance=v,
                                    convolved_variance=vt,
                                    preconvolution_kernel=preconvolution_kernel)
               for y in nodes_y for x in nodes_x]
    return WhiteningPlan(filters, nodes_x, nodes_y, info)


def finish_record(plan: WhiteningPlan, psf_image: np.ndarray | None) -> np.ndarray | None:
    """Complete ``plan.info`` (nodes, filters, kernel sum, expected variance) after the
    whitening; return the whitened PSF of ``psf_image`` (None without one)."""
    info, filters = plan.info, plan.filters
    centre = filters[len(filters) // 2]
    psf_out = None if psf_image is None else decorrelated_psf(psf_image, centre.image_filter)
    info["nodes_x"] = plan.nodes_x.tolist()
    info["nodes_y"] = plan.nodes_y.tolist()
    info["filters"] = [f.to_dict() for f in filters]
    info["kernel_sum"] = centre.kernel_sum
    info["expected_variance"] = centre.output_variance / (
        info["norm"] ** 2 if info["mode"] == CONVOLVE_SCIENCE else 1.0)
    return psf_out


def decorrelate(
    difference: Exposure,
    *,
    science: Exposure,
    template: Exposure,
    kernel_at: Callable[[float, float], np.ndarray],
    mode: str = CONVOLVE_TEMPLATE,
    psf_image: np.ndarray | None = None,
    preconvolution_kernel: np.ndarray | None = None,
    grid: tuple[int, int] = (1, 1),
    ignore_mask_planes: Sequence[str] = IGNORE_MASK_PLANES,
    complete_variance: bool = False,
    norm: float | None = None,
) -> Decorrelated:
    """Whiten a difference (or score) exposure and replace its variance plane.

    Parameters
    ----------
    difference : Exposure
        ``S − K⋆T − b`` (convolveTemplate), ``(K⋆S + b − T) / norm`` (convolveScience) or
        ``P⋆S − K⋆T − b`` (preconvolution); same grid as ``science`` and ``template``.
    science, template : Exposure
        The *unconvolved* inputs (template warped and cut to the difference's pixels);
        only their variance planes and masks are read.
    kernel_at : callable
        ``kernel_at(x, y)`` → kernel image at parent pixel ``(x, y)``, e.g.
        :meth:`psfmatch.kernel.SpatialKernel.image_at`.
    mode : {"convolveTemplate", "convolveScience"}
        Which image was convolved.
    psf_image : ndarray, optional
        Unit-sum PSF of the *unconvolved* image (science PSF in convolveTemplate mode,
        template PSF in convolveScience mode); its whitened version is returned.
    preconvolution_kernel : ndarray, optional
        Unit-sum PSF the science image was correlated with (score image;
        convolveTemplate only).
    grid : (int, int)
        ``(ny, nx)`` nodes: ``(1, 1)`` evaluates the kernel at the bbox centre only (as
        ip_diffim); more nodes place them at the centres of ``ny × nx`` equal cells, build
        one filter per node and blend the filtered images bilinearly between nodes
        (equivalent to interpolating the filter itself, since filtering is linear).
    ignore_mask_planes : sequence of str
        Planes excluded from the mean variances (``ignoreMaskPlanes``).
    complete_variance : bool
        ``completeVarPlanePropagation``: correlate each input variance plane with
        :math:`h^2` instead of scaling it by :math:`\\sum h^2`.
    norm : float, optional
        convolveScience: the kernel sum the difference was divided by (default: the kernel
        sum at the bbox centre); the variance plane is divided by ``norm**2``.

    Returns
    -------
    Decorrelated
        image: :math:`\\phi \\star D` (bilinear blend of per-node results); variance:
        :math:`V_{\\rm unconv}\\sum h_1^2 + V_{\\rm conv}\\sum h_2^2` (blended; divided by
        ``norm²`` in convolveScience); mask: unchanged; non-finite pixels stay as they were.
    """
    if mode not in (CONVOLVE_TEMPLATE, CONVOLVE_SCIENCE):
        msg = f"mode must be {CONVOLVE_TEMPLATE!r} or {CONVOLVE_SCIENCE!r}, got {mode!r}"
        raise ValueError(msg)
    if preconvolution_kernel is not None and mode != CONVOLVE_TEMPLATE:
        msg = "a preconvolution kernel needs mode='convolveTemplate' (score image)"
        raise ValueError(msg)
    for name, exp in (("science", science), ("template", template)):
        if exp.shape != difference.shape or exp.xy0 != difference.xy0:
            msg = (f"{name} ({exp.shape} at {exp.xy0}) is not on the difference's grid "
                   f"({difference.shape} at {difference.xy0})")
            raise ValueError(msg)
    svar = mean_variance(science, ignore_mask_planes=ignore_mask_planes)
    tvar = mean_variance(template, ignore_mask_planes=ignore_mask_planes)
    unconv, conv = (science, template) if mode == CONVOLVE_TEMPLATE else (template, science)
    plan = whitening_plan(difference.bbox, kernel_at=kernel_at, mode=mode, grid=grid,
                          science_variance=svar, template_variance=tvar,
                          preconvolution_kernel=preconvolution_kernel,
                          complete_variance=complete_variance)
    info = plan.info
    if "skipped" in info:
        return Decorrelated(difference, [], np.zeros(0), np.zeros(0), None, info)
    filters, nodes_x, nodes_y = plan.filters, plan.nodes_x, plan.nodes_y
    ny, nx = difference.shape
    xs = np.arange(nx) + difference.xy0[0]
    ys = np.arange(ny) + difference.xy0[1]
    wx, wy = node_weights(xs, nodes_x), node_weights(ys, nodes_y)

    def support(weights: np.ndarray) -> slice:
        idx = np.flatnonzero(weights > 0)
        return slice(int(idx[0]), int(idx[-1]) + 1)

    def blend(per_node: Callable[[DecorrelationFilter, slice, slice], np.ndarray | float]
              ) -> np.ndarray:
        # each node only contributes where its tent weight is > 0
        out = np.zeros((ny, nx))
        for j in range(len(nodes_y)):
            rows = support(wy[j])
            for i in range(len(nodes_x)):
                cols = support(wx[i])
                w = wy[j][rows, None] * wx[i][None, cols]
                out[rows, cols] += w * per_node(filters[j * len(nodes_x) + i], rows, cols)
        return out

    data, bad_image = fill_non_finite(difference.image)
    image = blend(lambda f, r, c: filter_region(data, f.image_filter, r, c))
    image[bad_image] = difference.image[bad_image]
    v_un, _ = fill_non_finite(unconv.variance)
    v_co, _ = fill_non_finite(conv.variance)
    if complete_variance:
        variance = blend(lambda f, r, c: filter_region(v_un, f.unconvolved_filter**2, r, c)
                         + filter_region(v_co, f.convolved_filter**2, r, c))
    else:
        variance = v_un * blend(lambda f, r, c: f.unconvolved_gain) \
            + v_co * blend(lambda f, r, c: f.convolved_gain)
    if mode == CONVOLVE_SCIENCE:
        if norm is None:
            min_x, min_y, max_x, max_y = difference.bbox
            norm = float(np.sum(kernel_at(0.5 * (min_x + max_x), 0.5 * (min_y + max_y))))
        variance = variance / norm**2
        info["norm"] = float(norm)
    bad_var = ~np.isfinite(difference.variance) | ~np.isfinite(variance)
    variance[bad_var] = difference.variance[bad_var]

    psf_out = finish_record(plan, psf_image)
    exposure = difference.with_(image=image.astype(np.float32),
                                variance=variance.astype(np.float32))
    return Decorrelated(exposure, filters, nodes_x, nodes_y, psf_out, info)
