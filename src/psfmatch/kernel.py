"""The spatially varying PSF-matching kernel as a product.

:class:`SpatialKernel` holds the basis images ``B_i``, the spatial coefficients
``c_{i,t}`` of each basis over a spatial function family ``f_t``, and the differential
background. The kernel image at parent pixel ``(x, y)`` is
:math:`K_{x,y} = \\sum_i \\big(\\sum_t c_{i,t} f_t(x, y)\\big) B_i` (not normalised: its
sum is the photometric scale). It is applied with the correlation of
:mod:`psfmatch.convolution`, so ``science ≈ K ⋆ template + background``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from psfmatch.spatial import SpatialFunction

__all__ = ["SpatialKernel"]


@dataclass(frozen=True, eq=False)
class SpatialKernel:
    """A spatially varying linear-combination kernel and its background.

    Attributes
    ----------
    basis : ndarray, shape (n_basis, k, k)
    coefficients : ndarray, shape (n_basis, n_terms)
        Spatial coefficients of each basis kernel over ``kernel_function``.
    kernel_function : SpatialFunction
    background_coefficients : ndarray, shape (n_bg_terms,)
        Empty or all-zero when no background was fitted.
    background_function : SpatialFunction or None
    metadata : dict
        Provenance (config, basis description, fit health) stored with the kernel.
    covariance : ndarray or None
        Covariance of the parameter vector ``[coefficients.ravel(),
        background_coefficients]`` (``calculateKernelUncertainty``); ``None`` when not
        computed.
    """

    basis: np.ndarray
    coefficients: np.ndarray
    kernel_function: SpatialFunction
    background_coefficients: np.ndarray = field(default_factory=lambda: np.zeros(0))
    background_function: SpatialFunction | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    covariance: np.ndarray | None = None

    def __post_init__(self) -> None:
        basis = np.asarray(self.basis, dtype=np.float64)
        coefficients = np.asarray(self.coefficients, dtype=np.float64)
        if basis.ndim != 3 or basis.shape[1] != basis.shape[2] or basis.shape[1] % 2 == 0:
            msg = f"basis must have shape (n, k, k) with k odd, got {basis.shape}"
            raise ValueError(msg)
        if coefficients.shape != (basis.shape[0], self.kernel_function.n_terms):
            msg = (
                f"coefficients have shape {coefficients.shape}, expected "
                f"({basis.shape[0]}, {self.kernel_function.n_terms})"
            )
            raise ValueError(msg)
        bg = np.asarray(self.background_coefficients, dtype=np.float64)
        if self.background_function is not None and bg.shape != (
            self.background_function.n_terms,
        ):
            msg = (
                f"background has {bg.size} coefficients, expected "
                f"{self.background_function.n_terms}"
            )
            raise ValueError(msg)
        if self.covariance is not None:
            cov = np.asarray(self.covariance, dtype=np.float64)
            n_par = coefficients.size + bg.size
            if cov.shape != (n_par, n_par):
                msg = f"covariance has shape {cov.shape}, expected ({n_par}, {n_par})"
                raise ValueError(msg)
            object.__setattr__(self, "covariance", cov)
        object.__setattr__(self, "basis", basis)
        object.__setattr__(self, "coefficients", coefficients)
        object.__setattr__(self, "background_coefficients", bg)

    # ------------------------------------------------------------------ evaluation
    @property
    def kernel_size(self) -> int:
        """Kernel width (= height) in pixels."""
        return int(self.basis.shape[1])

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """Inclusive parent bbox of the spatial model."""
        return self.kernel_function.bbox

    @property
    def centre(self) -> tuple[float, float]:
        """Centre of the bbox (where ip_diffim reports the kernel sum)."""
        min_x, min_y, max_x, max_y = self.bbox
        return (0.5 * (min_x + max_x), 0.5 * (min_y + max_y))

    def coefficients_at(self, x: float, y: float) -> np.ndarray:
        """Basis coefficients at parent pixel ``(x, y)``."""
        return self.coefficients @ self.kernel_function.terms(float(x), float(y))

    def image_at(self, x: float, y: float) -> np.ndarray:
        """Kernel image at parent pixel ``(x, y)``, science-pixel units (not normalised)."""
        return np.tensordot(self.coefficients_at(x, y), self.basis, axes=1)

    def sum_at(self, x: float, y: float) -> float:
        """Kernel sum at ``(x, y)``."""
        return float(self.image_at(x, y).sum())

    def sum_at_centre_of(self, bbox: tuple[int, int, int, int]) -> float:
        """Kernel sum at the centre of ``bbox = (min_x, min_y, max_x, max_y)`` (inclusive,
        parent pixels), e.g. the science image's: the κ of convolveScience differences."""
        min_x, min_y, max_x, max_y = bbox
        return self.sum_at(0.5 * (min_x + max_x), 0.5 * (min_y + max_y))

    @property
    def kernel_sum(self) -> float:
        """Kernel sum at the centre of the bbox."""
        return self.sum_at(*self.centre)

    def background_at(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray | float:
        """Differential background at parent pixel(s) ``(x, y)``."""
        if self.background_function is None or self.background_coefficients.size == 0:
            return np.zeros(np.broadcast(np.asarray(x), np.asarray(y)).shape)[()]
        return self.background_function.evaluate(self.background_coefficients, x, y)

    # ------------------------------------------------------------------ uncertainty
    def _require_covariance(self) -> np.ndarray:
        if self.covariance is None:
            msg = ("this kernel carries no covariance; fit it with "
                   "psf_match.calculateKernelUncertainty: true")
            raise ValueError(msg)
        return self.covariance

    def _pixel_jacobian(self, x: float, y: float) -> np.ndarray:
        """``∂K_{x,y}[p] / ∂c_{i,t} = B_i[p] f_t(x, y)``, shape ``(k², n_basis·n_terms)``."""
        terms = self.kernel_function.terms(float(x), float(y))
        flat = self.basis.reshape(self.basis.shape[0], -1)  # (n_basis, k²)
        return (flat.T[:, :, None] * terms[None, None, :]).reshape(flat.shape[1], -1)

    def image_variance_at(self, x: float, y: float) -> np.ndarray:
        """Variance of every pixel of :meth:`image_at` ``(x, y)``, shape ``(k, k)``.

        :math:`\\mathrm{Var}\\,K_{x,y}[p] = J_p \\Sigma_{cc} J_p^T` with
        :math:`J_{p,(i,t)} = B_i[p] f_t(x, y)` and :math:`\\Sigma_{cc}` the kernel block of
        :attr:`covariance`.
        """
        cov = self._require_covariance()
        n = self.coefficients.size
        jac = self._pixel_jacobian(x, y)
        variance = np.einsum("pa,ab,pb->p", jac, cov[:n, :n], jac, optimize=True)
        return np.clip(variance, 0.0, None).reshape(self.basis.shape[1:])

    def sum_variance_at(self, x: float, y: float) -> float:
        """Variance of :meth:`sum_at` ``(x, y)``."""
        cov = self._require_covariance()
        n = self.coefficients.size
        grad = self._pixel_jacobian(x, y).sum(axis=0)
        return max(float(grad @ cov[:n, :n] @ grad), 0.0)

    def background_variance_at(
        self, x: np.ndarray | float, y: np.ndarray | float
    ) -> np.ndarray | float:
        """Variance of :meth:`background_at` at parent pixel(s) ``(x, y)``.

        :math:`p_B^T \\Sigma_{bb} p_B` with :math:`p_B` the background terms at
        ``(x, y)``; zero when no background was fitted.
        """
        cov = self._require_covariance()
        shape = np.broadcast(np.asarray(x), np.asarray(y)).shape
        if self.background_function is None or self.background_coefficients.size == 0:
            return np.zeros(shape)[()]
        n = self.coefficients.size
        terms = self.background_function.terms(x, y).reshape(self.background_coefficients.size, -1)
        block = cov[n:, n:]
        variance = np.einsum("ai,ab,bi->i", terms, block, terms)
        return np.clip(variance, 0.0, None).reshape(shape)[()]

    def refactored(self) -> np.ndarray:
        """afw's refactoring: ``K'_t = Σ_i c_{i,t} B_i``, shape ``(n_terms, k, k)``.

        The kernel at ``(x, y)`` is then ``Σ_t f_t(x, y) K'_t``, so a whole image is
        convolved with one correlation per spatial term.
        """
        return np.tensordot(self.coefficients.T, self.basis, axes=1)
