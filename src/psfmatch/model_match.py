"""Model-PSF matching: ip_diffim's ``ModelPsfMatchTask`` (docs/model-psf.md).

An exposure whose PSF model is :math:`P(x, y)` is convolved with a spatially varying
kernel :math:`K(x, y)` so that its PSF becomes a target (reference) model :math:`R`:
:math:`K_{x,y} \\star P_{x,y} \\approx R`. The kernel is fitted on *realised PSF images*,
not on stars:

1. cells of ``sizeCellX × sizeCellY`` over the exposure bbox grown by one cell on every
   side; one candidate at each cell centre;
2. the largest PSF image over those positions sets ``psf_size``; padding to
   ``nextOdd(kernelSize · autoPadPsfTo)`` (``doAutoPadPsf``) or by ``padPsfBy``;
3. the kernel must fit: ``kernelSize ≤`` the largest odd number below ``psf_size``;
4. the reference model is resized to ``psf_size`` if it can be (analytic models);
5. candidate ``(x, y)``: template = exposure PSF image, science = reference image, both
   embedded centred in ``psf_size × psf_size`` zeros, variance 1 everywhere;
6. the configured AL basis (``scaleByFwhm`` off by default), per-candidate fits, all
   clipping off, one spatial fit; the constant coefficient of basis 0 is then set to
   ``kernelSum``, so the kernel sums to ``kernelSum`` everywhere;
7. the exposure is convolved with the kernel *normalised per pixel*
   (``doNormalize = True``): :math:`O = (K \\star I) / \\Sigma K`, variance
   :math:`(K^2 \\star V)/(\\Sigma K)^2`; the ``k // 2`` border is NaN / ``NO_DATA`` / ∞.

Arrays in, arrays out: file handling is in :mod:`psfmatch.steps`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from psfmatch.basis import alard_lupton_basis, choose_alard_lupton
from psfmatch.config import ModelPsfMatchConfig, PsfMatchConfig
from psfmatch.convolution import correlate
from psfmatch.errors import (
    ConfigError,
    InsufficientAreaError,
    InsufficientCandidatesError,
    KernelTooLargeError,
    PsfModelError,
)
from psfmatch.exposure import Exposure, PsfModel
from psfmatch.fit import CandidateFitError, fit_candidate
from psfmatch.kernel import SpatialKernel
from psfmatch.psf import ImagePsf, adaptive_fwhm, embed_centred
from psfmatch.spatial import SpatialFunction, fit_spatial
from psfmatch.subtract import convolve_exposure

__all__ = [
    "CellGrid",
    "ModelMatch",
    "cell_grid",
    "check_kernel_size",
    "match_psf_models",
    "matched_psf_residual",
    "next_odd",
    "padded_psf_size",
    "psf_matched_exposure",
]

logger = logging.getLogger("psfmatch.model_match")

#: Variance given to every pixel of a realised PSF image (ModelPsfMatchTask).
PSF_IMAGE_VARIANCE = 1.0


def next_odd(value: float) -> int:
    """``ceil(value)``, plus one if that is even (ip_diffim's ``nextOddInteger``)."""
    n = math.ceil(value)
    return n + 1 if n % 2 == 0 else n


@dataclass(frozen=True)
class CellGrid:
    """Candidate positions of model-PSF matching.

    Attributes
    ----------
    region : tuple of int
        Inclusive parent bbox ``(min_x, min_y, max_x, max_y)`` of the cell set (the
        exposure bbox grown by ``grow_cells`` cells); the spatial functions live on it.
    xs, ys : ndarray
        Cell-centre coordinates along each axis.
    """

    region: tuple[int, int, int, int]
    xs: np.ndarray
    ys: np.ndarray

    @property
    def positions(self) -> list[tuple[int, int, float, float]]:
        """``(column, row, x, y)`` of every cell centre, row by row (y outer)."""
        return [(i, j, float(x), float(y)) for j, y in enumerate(self.ys)
                for i, x in enumerate(self.xs)]

    @property
    def centre(self) -> tuple[float, float]:
        """Centre of :attr:`region`."""
        min_x, min_y, max_x, max_y = self.region
        return (0.5 * (min_x + max_x), 0.5 * (min_y + max_y))


def cell_grid(
    bbox: tuple[int, int, int, int], *, size_cell_x: int, size_cell_y: int, grow_cells: int = 1
) -> CellGrid:
    """Cell centres over ``bbox`` grown by ``grow_cells`` cells on every side.

    See docs/model-psf.md#cell-grid.

    ``n_x = region_width // size_cell_x`` (floor; likewise y) and the centres are
    ``size_cell_x·i + size_cell_x // 2 + region_min_x``. ip_diffim grows by one cell
    (since 2017-12) so that candidates reach the image edges; ``grow_cells = 0`` is the
    earlier behaviour, where an exposure smaller than a cell has no cell at all.

    Raises
    ------
    InsufficientAreaError
        If no whole cell fits along either axis.
    """
    min_x, min_y, max_x, max_y = (int(v) for v in bbox)
    gx, gy = grow_cells * size_cell_x, grow_cells * size_cell_y
    region = (min_x - gx, min_y - gy, max_x + gx, max_y + gy)
    width, height = region[2] - region[0] + 1, region[3] - region[1] + 1
    n_x, n_y = width // size_cell_x, height // size_cell_y
    if n_x < 1 or n_y < 1:
        msg = (
            f"a {width}x{height}-pixel region (exposure bbox {bbox} grown by {grow_cells} "
            f"cell(s)) holds {n_x}x{n_y} cells of {size_cell_x}x{size_cell_y} pixels "
            "(sizeCellX, sizeCellY): Insufficient area to match"
        )
        raise InsufficientAreaError(msg)
    xs = size_cell_x * np.arange(n_x) + size_cell_x // 2 + region[0]
    ys = size_cell_y * np.arange(n_y) + size_cell_y // 2 + region[1]
    return CellGrid(region=region, xs=xs.astype(np.float64), ys=ys.astype(np.float64))


def padded_psf_size(
    psf_size: int,
    *,
    kernel_size: int,
    do_auto_pad_psf: bool,
    auto_pad_psf_to: float,
    pad_psf_by: int,
) -> tuple[int, int]:
    """PSF image size after padding, and the padding (docs/model-psf.md#psf-image-size).

    With ``do_auto_pad_psf``: padding ``max(0, nextOdd(kernel_size·auto_pad_psf_to) −
    psf_size)``; otherwise ``pad_psf_by``, which must be even.

    Returns
    -------
    (int, int)
        ``(psf_size + padding, padding)``.
    """
    if do_auto_pad_psf:
        padding = max(0, next_odd(kernel_size * auto_pad_psf_to) - psf_size)
    else:
        if pad_psf_by % 2:
            msg = f"model_psf_match.psf_match.padPsfBy must be even, got {pad_psf_by}"
            raise ConfigError(msg)
        padding = int(pad_psf_by)
    return psf_size + padding, padding


def check_kernel_size(kernel_size: int, psf_size: int) -> int:
    """Raise unless a ``kernel_size`` kernel fits in ``psf_size`` PSF images.

    See docs/model-psf.md#kernel-size-rule.

    The largest kernel allowed is the largest odd number below ``psf_size``. Returns it.

    Raises
    ------
    KernelTooLargeError
        Naming the three remedies of ip_diffim's message.
    """
    max_kernel = psf_size - 1
    if max_kernel % 2 == 0:
        max_kernel -= 1
    if kernel_size > max_kernel:
        msg = (
            f"kernel size ({kernel_size}) is too big to match PSF images of size {psf_size}. "
            "Reconfigure model_psf_match with one of: "
            f"1) kernel.kernelSize <= {max_kernel}; "
            "2) psf_match.doAutoPadPsf: true; "
            f"3) psf_match.padPsfBy >= {kernel_size - max_kernel} (even)"
        )
        raise KernelTooLargeError(msg)
    return max_kernel


def _realise(model: PsfModel, x: float, y: float, size: int, what: str) -> np.ndarray:
    try:
        image = np.asarray(model.image_at(x, y), dtype=np.float64)
    except Exception as exc:  # a model failing at one position: name the position
        msg = f"{what} cannot be evaluated at ({x:.1f}, {y:.1f}): {exc}"
        raise PsfModelError(msg) from exc
    if image.shape == (size, size):
        return image / image.sum()
    try:
        return embed_centred(image / image.sum(), size)
    except ValueError as exc:
        msg = (
            f"{what} image at ({x:.1f}, {y:.1f}) is {image.shape[1]}x{image.shape[0]}, larger "
            f"than the {size}x{size} PSF images, and the model cannot be resized: pad the "
            "exposure PSF images more (psf_match.autoPadPsfTo or padPsfBy) or give a "
            "smaller target image"
        )
        raise PsfModelError(msg) from exc


def _resized_reference(reference: Any, psf_size: int, where: tuple[float, float]) -> Any:
    """The reference model at ``psf_size``: resized if it can be, else kept.

    See docs/model-psf.md#target-resizing.
    """
    shape = np.shape(reference.image_at(*where))
    if shape == (psf_size, psf_size):
        return reference
    if hasattr(reference, "resized"):
        return reference.resized(psf_size)
    logger.warning("target PSF images are %s and the model cannot be resized to %d; "
                   "they are padded with zeros", shape, psf_size)
    return reference


def matched_psf_residual(
    psf_image: np.ndarray, reference_image: np.ndarray, kernel_image: np.ndarray,
    *, fit_region_only: bool,
) -> float:
    """``max |K/ΣK ⋆ P − R| / max R`` for one position.

    ``P`` is the whole (zero-padded) PSF image, so the same-size correlation is the
    matched PSF itself; with ``fit_region_only`` the comparison is restricted to the
    pixels the fit constrained (the stamp shrunk by the kernel half-width).
    """
    matched = correlate(psf_image, kernel_image / kernel_image.sum())
    diff = np.abs(matched - reference_image)
    if fit_region_only:
        half = kernel_image.shape[0] // 2
        diff = diff[half:-half, half:-half]
    return float(diff.max() / reference_image.max())


@dataclass(frozen=True)
class ModelMatch:
    """Everything model-PSF matching produces before the image is convolved.

    Attributes
    ----------
    kernel : SpatialKernel
        The matching kernel (sum = ``kernel_sum`` everywhere).
    reference : PsfModel
        The (possibly resized) reference model; the output exposure's PSF.
    reference_image : ndarray
        Its image at the region centre, ``psf_size`` square.
    psf_size, padding : int
    cells : dict of ndarray
        One row per cell: ``id, cell_x, cell_y, x, y, status, reason, kernel_sum,
        condition_number, residual_single, residual_spatial, residual_spatial_stamp``.
    summary : dict
        Basis, FWHMs, counts and the spatial condition number.
    """

    kernel: SpatialKernel
    reference: Any
    reference_image: np.ndarray
    psf_size: int
    padding: int
    cells: dict[str, np.ndarray]
    summary: dict[str, Any] = field(default_factory=dict)


def match_psf_models(
    psf: PsfModel,
    reference: PsfModel,
    *,
    bbox: tuple[int, int, int, int],
    kernel_sum: float,
    kernel: PsfMatchConfig,
    padding: ModelPsfMatchConfig,
    grow_cells: int = 1,
) -> ModelMatch:
    """Fit the kernel that matches ``psf`` (spatially varying) to ``reference``.

    See docs/model-psf.md#model-psf-fit.

    Parameters
    ----------
    psf : PsfModel
        The exposure's PSF (the image that gets convolved, ip_diffim's "template").
    reference : PsfModel
        The target model (``referencePsfModel``); analytic models are resized to the
        PSF image size.
    bbox : tuple of int
        Inclusive parent bbox of the exposure.
    kernel_sum : float
        Value given to the kernel sum (the constant coefficient of basis 0).
    kernel : PsfMatchConfig
        The kernel options (``ModelPsfMatchConfig.kernel``: AL basis and sizing, cells,
        spatial orders, background, weighting, condition-number check).
    padding : ModelPsfMatchConfig
        ``doAutoPadPsf``, ``autoPadPsfTo``, ``padPsfBy``.
    grow_cells : int
        The cell-set growth (1 in ip_diffim).

    Raises
    ------
    InsufficientAreaError, KernelTooLargeError, PsfModelError, InsufficientCandidatesError
    """
    cfg = kernel
    grid = cell_grid(bbox, size_cell_x=cfg.size_cell_x, size_cell_y=cfg.size_cell_y,
                     grow_cells=grow_cells)
    positions = grid.positions
    raw = []
    for _, _, x, y in positions:
        try:
            raw.append(np.asarray(psf.image_at(x, y), dtype=np.float64))
        except Exception as exc:
            msg = f"the exposure PSF cannot be evaluated at ({x:.1f}, {y:.1f}): {exc}"
            raise PsfModelError(msg) from exc
    psf_size = max(max(img.shape) for img in raw)
    psf_size, padding = padded_psf_size(
        psf_size, kernel_size=cfg.kernel_size, do_auto_pad_psf=padding.do_auto_pad_psf,
        auto_pad_psf_to=padding.auto_pad_psf_to, pad_psf_by=padding.pad_psf_by,
    )
    check_kernel_size(cfg.kernel_size, psf_size)
    reference = _resized_reference(reference, psf_size, grid.centre)

    psf_fwhm = adaptive_fwhm(_realise(psf, *grid.centre, psf_size, "exposure PSF"))
    reference_image = _realise(reference, *grid.centre, psf_size, "target PSF")
    reference_fwhm = adaptive_fwhm(reference_image)
    choice = choose_alard_lupton(cfg, target_fwhm=psf_fwhm, reference_fwhm=reference_fwhm)
    check_kernel_size(choice.kernel_size, psf_size)
    basis = alard_lupton_basis(half_width=choice.kernel_size // 2, sigmas=choice.sigmas,
                               degrees=choice.degrees)
    logger.info("model-PSF matching: %d cells over region %s, PSF images %d px (padding %d), "
                "kernel %d px, %d AL basis kernels (%s mode); PSF FWHM %.3f -> target %.3f px",
                len(positions), grid.region, psf_size, padding, choice.kernel_size,
                basis.shape[0], choice.mode, psf_fwhm, reference_fwhm)

    n = len(positions)
    status = np.full(n, "GOOD", dtype=object)
    reason = np.full(n, "", dtype=object)
    single_sum = np.full(n, np.nan)
    cond = np.full(n, np.nan)
    residual_single = np.full(n, np.nan)
    variance = np.full((psf_size, psf_size), 2.0 * PSF_IMAGE_VARIANCE)  # var_S + var_T
    templates, sciences, solutions = [], [], []
    for row, (_, _, x, y) in enumerate(positions):
        template = embed_centred(raw[row] / raw[row].sum(), psf_size)
        science = _realise(reference, x, y, psf_size, "target PSF")
        templates.append(template)
        sciences.append(science)
        try:
            solution = fit_candidate(
                template, science, variance, basis, fit_background=cfg.fit_for_background,
                constant_variance_weighting=cfg.constant_variance_weighting,
                condition_number_type=cfg.condition_number_type,
            )
        except CandidateFitError as exc:
            status[row], reason[row] = "BAD", f"single fit failed: {exc}"
            solutions.append(None)
            continue
        cond[row] = solution.condition_number
        single_sum[row] = solution.kernel_sum
        if cfg.check_condition_number and solution.condition_number > cfg.max_condition_number:
            status[row] = "BAD"
            reason[row] = (f"condition number {solution.condition_number:.3g} > "
                           f"maxConditionNumber {cfg.max_condition_number:.3g}")
            solutions.append(None)
            continue
        residual_single[row] = matched_psf_residual(template, science, solution.kernel,
                                                    fit_region_only=True)
        solutions.append(solution)
    good = [i for i, s in enumerate(solutions) if s is not None]
    counts = {"cells": n, "single_good": len(good)}
    if not good:
        msg = "model-PSF matching: no PSF candidate could be fitted (all spatial cells are empty)"
        raise InsufficientCandidatesError(msg, counts)

    kernel_function = SpatialFunction(cfg.spatial_kernel_order, cfg.spatial_model_type,
                                      grid.region)
    bg_function = (SpatialFunction(cfg.spatial_bg_order, cfg.spatial_model_type, grid.region)
                   if cfg.fit_for_background else None)
    fit = fit_spatial(
        [(positions[i][2], positions[i][3]) for i in good],
        [solutions[i].normal_matrix for i in good],
        [solutions[i].normal_vector for i in good],
        n_basis=basis.shape[0], kernel_function=kernel_function,
        background_function=bg_function, constant_first_term=True,
        condition_number_type=cfg.condition_number_type,
    )
    coefficients = fit.kernel_coefficients.copy()
    fitted_sum = float(coefficients[0, 0])
    coefficients[0, 0] = kernel_sum  # the other bases sum to 0: ΣK = kernel_sum everywhere
    summary = {
        "region": list(grid.region), "n_cells_x": int(grid.xs.size), "n_cells_y": int(grid.ys.size),
        "psf_size": psf_size, "padding": padding, "kernel_size": choice.kernel_size,
        "basis": {"sigmas": list(choice.sigmas), "degrees": list(choice.degrees),
                  "mode": choice.mode, "n_basis": int(basis.shape[0])},
        "psf_fwhm": psf_fwhm, "target_fwhm": reference_fwhm,
        "kernel_sum": kernel_sum, "fitted_kernel_sum": fitted_sum,
        "condition_number": fit.condition_number, "n_unknowns": fit.n_unknowns,
        "n_candidates": len(good), "counts": counts,
    }
    matched_kernel = SpatialKernel(
        basis=basis, coefficients=coefficients, kernel_function=kernel_function,
        background_coefficients=fit.background_coefficients if bg_function else np.zeros(0),
        background_function=bg_function, metadata=summary,
    )
    residual_spatial = np.full(n, np.nan)
    residual_stamp = np.full(n, np.nan)
    for i in good:
        k_image = matched_kernel.image_at(positions[i][2], positions[i][3])
        residual_spatial[i] = matched_psf_residual(templates[i], sciences[i], k_image,
                                                   fit_region_only=True)
        residual_stamp[i] = matched_psf_residual(templates[i], sciences[i], k_image,
                                                 fit_region_only=False)
    cells = {
        "id": np.arange(n, dtype=np.int64),
        "cell_x": np.array([p[0] for p in positions], dtype=np.int64),
        "cell_y": np.array([p[1] for p in positions], dtype=np.int64),
        "x": np.array([p[2] for p in positions]),
        "y": np.array([p[3] for p in positions]),
        "status": status.astype(str),
        "reason": reason.astype(str),
        "kernel_sum": single_sum,
        "condition_number": cond,
        "residual_single": residual_single,
        "residual_spatial": residual_spatial,
        "residual_spatial_stamp": residual_stamp,
    }
    logger.info("model-PSF matching: %d/%d cells fitted, spatial condition %.3g, fitted kernel "
                "sum %.6f set to %.6f; max residual (fit region) %.4g of the target peak",
                len(good), n, fit.condition_number, fitted_sum, kernel_sum,
                float(np.nanmax(residual_spatial)))
    return ModelMatch(kernel=matched_kernel, reference=reference, reference_image=reference_image,
                      psf_size=psf_size, padding=padding, cells=cells, summary=summary)


def psf_matched_exposure(
    exposure: Exposure, kernel: SpatialKernel, target_image: np.ndarray
) -> Exposure:
    """Convolve ``exposure`` with ``kernel``, normalised per pixel.

    See docs/model-psf.md#normalised-convolution.

    ``O = (K ⋆ I)/ΣK``, variance ``(K² ⋆ V)/(ΣK)²``, masks OR-ed over the kernel
    footprint (:func:`psfmatch.subtract.convolve_exposure`); the ``k // 2`` border gets
    afw's edge pixel (NaN, ``NO_DATA`` only, +∞). WCS, ``xy0`` and metadata are kept and
    the PSF becomes the constant ``target_image``.
    """
    conv = convolve_exposure(exposure, kernel)
    ny, nx = exposure.shape
    x0, y0 = exposure.xy0
    sums = kernel.refactored().sum(axis=(1, 2))
    factors = kernel.kernel_function.separable_terms(
        np.arange(nx, dtype=np.float64)[None, :] + x0, np.arange(ny, dtype=np.float64)[:, None] + y0
    )
    norm = np.zeros((ny, nx))
    for s, (fx, fy) in zip(sums, factors, strict=True):
        if s != 0:
            norm = norm + s * fx * fy
    image = conv.image / norm
    variance = conv.variance / (norm * norm)
    mask = conv.mask.copy()
    half = kernel.kernel_size // 2
    edge = np.zeros((ny, nx), dtype=bool)
    edge[:half, :] = edge[ny - half:, :] = edge[:, :half] = edge[:, nx - half:] = True
    image[edge] = np.nan
    variance[edge] = np.inf
    mask[edge] = 1 << conv.mask_planes["NO_DATA"]
    return conv.with_(image=image.astype(np.float32), variance=variance.astype(np.float32),
                      mask=mask, psf=ImagePsf(target_image))
