"""Kernel bases: Alard–Lupton Gaussians × polynomials, and delta functions.

Conventions (docs/conventions.md#kernel-images): a kernel image of half-width ``h`` has
shape ``(2h+1, 2h+1)``; element ``[v + h, u + h]`` is the weight of the offset
``(u, v)`` (numpy ``[y, x]`` order). Basis lists are float64 arrays of shape
``(n_basis, 2h+1, 2h+1)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "SIGMA_TO_FWHM",
    "AlardLuptonChoice",
    "alard_lupton_basis",
    "choose_alard_lupton",
    "choose_basis",
    "delta_function_basis",
    "polynomial_terms",
    "renormalize_basis",
]

#: ``2·sqrt(2·ln 2)``: FWHM of a Gaussian of unit sigma.
SIGMA_TO_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: Single-precision epsilon, the threshold ip_diffim's renormalisation uses.
_FLOAT32_EPS = 1.1920929e-7


def polynomial_terms(order: int) -> list[tuple[int, int]]:
    """Exponents ``(px, py)`` of all monomials of total degree ≤ ``order``, afw order.

    The order is ``1, x, y, x², xy, y², x³, x²y, xy², y³, ...``: for total degree
    ``m = 0..order`` the terms ``x^(m-j) y^j`` for ``j = 0..m``.
    """
    if order < 0:
        msg = f"polynomial order must be >= 0, got {order}"
        raise ValueError(msg)
    return [(m - j, j) for m in range(order + 1) for j in range(m + 1)]


@dataclass(frozen=True)
class AlardLuptonChoice:
    """Outcome of the AL sizing rule (``generateAlardLuptonBasisList``).

    See docs/basis.md#alard-lupton-sizing.

    Attributes
    ----------
    sigmas : tuple of float
        Gaussian sigmas (px).
    degrees : tuple of int
        Polynomial degree of each Gaussian.
    kernel_size : int
        Odd kernel width in pixels.
    mode : str
        ``"config"``, ``"convolution"`` or ``"deconvolution"``.
    """

    sigmas: tuple[float, ...]
    degrees: tuple[int, ...]
    kernel_size: int
    mode: str


def choose_alard_lupton(
    cfg: Any,
    *,
    target_fwhm: float | None = None,
    reference_fwhm: float | None = None,
) -> AlardLuptonChoice:
    """Choose AL sigmas and kernel size from the PSF FWHMs (current rule).

    See docs/basis.md#alard-lupton-sizing.

    ``cfg`` is a :class:`~psfmatch.config.PsfMatchConfig` (``kernelSize``,
    ``alardSigGauss``, ``alardDegGauss``, ``scaleByFwhm``, ``kernelSizeFwhmScaling``,
    ``kernelSizeMin``/``Max``, ``alardGaussBeta``, ``alardMinSig``,
    ``alardMinSigDeconv``). ``target_fwhm`` is the FWHM of the image that gets convolved
    (the template), ``reference_fwhm`` that of the image matched to (the science image).
    With :math:`\\sigma_K = \\sqrt{a^2 - b^2}` floored at ``floor`` (``a`` the larger,
    ``b`` the smaller PSF sigma), the sigmas are :math:`s_0 = \\max(floor, \\sigma_K/\\beta)`
    (``s_0 = \\sigma_K`` for one Gaussian) and :math:`s_i = \\beta s_{i-1}`. The kernel
    size is ``int(kernelSizeFwhmScaling · s_last)``, made odd, clamped to
    ``[kernelSizeMin, kernelSizeMax]``. If either FWHM is missing or ``scaleByFwhm`` is
    false the configured values are used unchanged; if the FWHMs are equal the configured
    sigmas are kept but the size is recomputed.
    """
    kernel_size, sigmas, degrees = cfg.kernel_size, cfg.alard_sig_gauss, cfg.alard_deg_gauss
    scale_by_fwhm, gauss_beta = cfg.scale_by_fwhm, cfg.alard_gauss_beta
    n = len(sigmas)
    if len(degrees) != n:
        msg = f"alardDegGauss has {len(degrees)} entries but alardSigGauss has {n}"
        raise ValueError(msg)
    if kernel_size % 2 == 0:
        msg = f"kernelSize must be odd, got {kernel_size}"
        raise ValueError(msg)
    sigmas = tuple(float(s) for s in sigmas)
    degrees = tuple(int(d) for d in degrees)
    if target_fwhm is None or reference_fwhm is None or not scale_by_fwhm:
        return AlardLuptonChoice(sigmas, degrees, kernel_size, "config")
    sigma_t = target_fwhm / SIGMA_TO_FWHM
    sigma_r = reference_fwhm / SIGMA_TO_FWHM
    if sigma_t == sigma_r:
        mode = "config"
    elif sigma_r > sigma_t:
        mode = "convolution"
        sigmas = _sigma_progression(sigma_r, sigma_t, cfg.alard_min_sig, n, gauss_beta)
    else:
        mode = "deconvolution"
        sigmas = _sigma_progression(sigma_t, sigma_r, cfg.alard_min_sig_deconv, n, gauss_beta)
    size = int(cfg.kernel_size_fwhm_scaling * sigmas[-1])
    if size % 2 == 0:
        size += 1
    size = min(cfg.kernel_size_max, max(size, cfg.kernel_size_min))
    return AlardLuptonChoice(sigmas, degrees, size, mode)


def choose_basis(
    cfg: Any, *, target_fwhm: float | None, reference_fwhm: float | None
) -> AlardLuptonChoice:
    """The basis a :class:`~psfmatch.config.PsfMatchConfig` asks for, given the two FWHMs.

    Alard–Lupton: :func:`choose_alard_lupton`. Delta functions: ``kernelSize`` pixels,
    whatever the FWHMs (no sigmas or degrees; mode ``delta-function``).
    """
    if cfg.kernel_basis_set == "delta-function":
        return AlardLuptonChoice((), (), cfg.kernel_size, "delta-function")
    return choose_alard_lupton(cfg, target_fwhm=target_fwhm, reference_fwhm=reference_fwhm)


def _sigma_progression(
    a: float, b: float, floor: float, n: int, beta: float
) -> tuple[float, ...]:
    sigma_k = max(math.sqrt(a * a - b * b), floor)
    first = max(floor, sigma_k / beta) if n > 1 else sigma_k
    return tuple(first * beta**i for i in range(n))


def alard_lupton_basis(
    *, half_width: int, sigmas: Sequence[float], degrees: Sequence[int]
) -> np.ndarray:
    """Raw-then-renormalised AL basis.

    See docs/basis.md#alard-lupton-images and docs/basis.md#renormalisation.

    For each Gaussian (sigma ``s``, degree ``d``), in order, the images
    :math:`G_s(u, v)\\, X^{p_x} Y^{p_y}` for every monomial of total degree ≤ ``d``
    (afw order), with :math:`G_s` sampled at pixel centres and normalised to unit sum,
    and :math:`X = u/h, Y = v/h` spanning −1…+1 across the kernel. The list is then
    renormalised (:func:`renormalize_basis`): element 0 sums to 1, the others sum to 0
    (where their raw sum is not ~0) and have unit L2 norm.

    Returns
    -------
    ndarray, shape (n_basis, 2h+1, 2h+1)
        ``n_basis = Σ (d+1)(d+2)/2``; 27 for the defaults (4, 2, 2).
    """
    if half_width < 1:
        msg = f"half_width must be >= 1, got {half_width}"
        raise ValueError(msg)
    if len(sigmas) != len(degrees):
        msg = f"got {len(sigmas)} sigmas but {len(degrees)} degrees"
        raise ValueError(msg)
    h = half_width
    offsets = np.arange(-h, h + 1, dtype=np.float64)
    u, v = np.meshgrid(offsets, offsets)  # u along x (columns), v along y (rows)
    x, y = u / h, v / h
    raw = []
    for sigma, degree in zip(sigmas, degrees, strict=True):
        if sigma <= 0:
            msg = f"Gaussian sigma must be > 0, got {sigma}"
            raise ValueError(msg)
        gauss = np.exp(-(u * u + v * v) / (2.0 * sigma * sigma))
        gauss /= gauss.sum()
        raw.extend(gauss * x**px * y**py for px, py in polynomial_terms(int(degree)))
    return renormalize_basis(np.array(raw))


def renormalize_basis(basis: np.ndarray) -> np.ndarray:
    """ip_diffim's ``renormalizeKernelList`` (docs/basis.md#renormalisation); returns a new array.

    Element 0 is scaled to unit sum. Every other element ``R`` with
    :math:`|\\Sigma R| > 1.19\\times10^{-7}` becomes :math:`R/\\Sigma R - B_0` (sum 0);
    then every element ``i ≥ 1`` is scaled to unit L2 norm. No Gram–Schmidt: the
    kernel sum of any combination equals the coefficient of element 0.
    """
    out = np.array(basis, dtype=np.float64, copy=True)
    if out.ndim != 3 or out.shape[0] == 0:
        msg = f"basis must have shape (n, h, w) with n >= 1, got {out.shape}"
        raise ValueError(msg)
    total = out[0].sum()
    if total == 0:
        msg = "first basis kernel sums to 0 and cannot carry the kernel sum"
        raise ValueError(msg)
    out[0] /= total
    for i in range(1, out.shape[0]):
        k = out[i].sum()
        if abs(k) > _FLOAT32_EPS:
            out[i] = out[i] / k - out[0]
        norm = math.sqrt(float(np.sum(out[i] ** 2)))
        if norm > 0:
            out[i] /= norm
    return out


def delta_function_basis(kernel_size: int) -> np.ndarray:
    """``kernel_size²`` delta functions, row by row (docs/basis.md#delta-function-basis).

    Element ``k`` has a single 1 at ``[k // kernel_size, k % kernel_size]``. The
    delta-function basis is *not* renormalised.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        msg = f"kernel_size must be a positive odd integer, got {kernel_size}"
        raise ValueError(msg)
    n = kernel_size * kernel_size
    return np.eye(n, dtype=np.float64).reshape(n, kernel_size, kernel_size)
