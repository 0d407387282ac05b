"""Spatial model of the kernel and background (reference §5.5).

Spatial functions are 2-D polynomials of total order ``q`` with terms in afw order
``1, x, y, x², xy, y², ...``:

* ``polynomial``: :math:`x^{p_x} y^{p_y}` in raw parent pixel coordinates;
* ``chebyshev1``: :math:`T_{p_x}(x') T_{p_y}(y')` with
  :math:`x' = (x - (x_{min}+x_{max})/2) \\cdot 2/(x_{max}-x_{min})` over the region box
  extended by half a pixel (``[minX − 0.5, maxX + 0.5]``).

The joint fit accumulates each candidate's normal equations ``(Q, w)`` through the map
``P`` from global unknowns to its local coefficients, :math:`M_s = \\sum P^T Q P`,
:math:`b_s = \\sum P^T w`, with the spatial functions evaluated at the candidate centre.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.polynomial import chebyshev

from psfmatch.basis import polynomial_terms
from psfmatch.fit import condition_number, solve_normal_equations

__all__ = [
    "SpatialFit",
    "SpatialFunction",
    "fit_spatial",
    "n_terms",
]

MODEL_TYPES = ("chebyshev1", "polynomial")


def n_terms(order: int) -> int:
    """Number of terms ``(q+1)(q+2)/2`` of a total-order-``q`` 2-D polynomial."""
    return (order + 1) * (order + 2) // 2


@dataclass(frozen=True)
class SpatialFunction:
    """A family of 2-D spatial functions over an inclusive parent bbox.

    Attributes
    ----------
    order : int
        Total order ``q``.
    model_type : str
        ``"chebyshev1"`` or ``"polynomial"``.
    bbox : tuple of int
        Inclusive ``(min_x, min_y, max_x, max_y)`` of the fit region.
    """

    order: int
    model_type: str
    bbox: tuple[int, int, int, int]

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            msg = f"spatialModelType must be one of {MODEL_TYPES}, got {self.model_type!r}"
            raise ValueError(msg)
        if self.order < 0:
            msg = f"spatial order must be >= 0, got {self.order}"
            raise ValueError(msg)
        object.__setattr__(self, "bbox", tuple(int(v) for v in self.bbox))

    @property
    def n_terms(self) -> int:
        """Number of terms."""
        return n_terms(self.order)

    def terms(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """All terms at ``(x, y)`` (parent pixels); shape ``(n_terms, *broadcast(x, y).shape)``."""
        factors = self.separable_terms(x, y)
        shape = np.broadcast(np.asarray(x), np.asarray(y)).shape
        return np.array([np.broadcast_to(fx * fy, shape) for fx, fy in factors])

    def separable_terms(
        self, x: np.ndarray | float, y: np.ndarray | float
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each term as a pair of factors ``(g(x), h(y))`` with term = ``g(x)·h(y)``.

        Both families are separable, so a term over a whole image costs two 1-D
        evaluations; pass ``x`` as a row and ``y`` as a column to broadcast lazily.
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if self.model_type == "polynomial":
            xs, ys = x, y
            powers_x = [np.ones_like(xs)]
            powers_y = [np.ones_like(ys)]
            for _ in range(self.order):
                powers_x.append(powers_x[-1] * xs)
                powers_y.append(powers_y[-1] * ys)
        else:
            min_x, min_y, max_x, max_y = self.bbox
            x0, x1 = min_x - 0.5, max_x + 0.5
            y0, y1 = min_y - 0.5, max_y + 0.5
            xs = (x - 0.5 * (x0 + x1)) * 2.0 / (x1 - x0)
            ys = (y - 0.5 * (y0 + y1)) * 2.0 / (y1 - y0)
            eye = np.eye(self.order + 1)
            powers_x = [chebyshev.chebval(xs, eye[p]) for p in range(self.order + 1)]
            powers_y = [chebyshev.chebval(ys, eye[p]) for p in range(self.order + 1)]
        return [(powers_x[px], powers_y[py]) for px, py in polynomial_terms(self.order)]

    def evaluate(self, coefficients: np.ndarray, x: np.ndarray | float, y: np.ndarray | float):
        """``Σ_t c_t f_t(x, y)`` (accumulated term by term, no stack of full-size terms)."""
        shape = np.broadcast(np.asarray(x), np.asarray(y)).shape
        out = np.zeros(shape)
        for c, (fx, fy) in zip(np.asarray(coefficients, dtype=np.float64),
                               self.separable_terms(x, y), strict=True):
            out = out + c * fx * fy
        return out[()] if out.ndim == 0 else out


@dataclass(frozen=True)
class SpatialFit:
    """Solution of the joint spatial fit.

    Attributes
    ----------
    kernel_coefficients : ndarray, shape (n_basis, n_kernel_terms)
        Spatial coefficients of each basis kernel (row 0 is ``[c_0, 0, …]`` when the
        first term is held constant).
    background_coefficients : ndarray, shape (n_bg_terms,)
        Empty when no background is fitted.
    condition_number : float
        Of the spatial normal matrix (``condition_number_type``).
    n_unknowns : int
    """

    kernel_coefficients: np.ndarray
    background_coefficients: np.ndarray
    condition_number: float
    n_unknowns: int


def fit_spatial(
    centres: Sequence[tuple[float, float]],
    normal_matrices: Sequence[np.ndarray],
    normal_vectors: Sequence[np.ndarray],
    *,
    n_basis: int,
    kernel_function: SpatialFunction,
    background_function: SpatialFunction | None,
    constant_first_term: bool,
    condition_number_type: str = "EIGENVALUE",
) -> SpatialFit:
    """Joint spatial solution from the candidates' normal equations (reference §5.5).

    Parameters
    ----------
    centres : sequence of (x, y)
        Candidate centres, parent pixels.
    normal_matrices, normal_vectors : sequences of ndarray
        Each candidate's ``Q`` (``n_basis(+1)`` square, background last when fitted)
        and ``w``.
    n_basis : int
    kernel_function : SpatialFunction
        Spatial family and order of the kernel coefficients.
    background_function : SpatialFunction or None
        Family and order of the background; ``None`` when no background is fitted.
    constant_first_term : bool
        Basis 0 gets one constant coefficient (AL, or any PCA basis), so the kernel sum
        is the same everywhere.

    Returns
    -------
    SpatialFit
    """
    if not centres:
        msg = "the spatial fit needs at least one candidate"
        raise ValueError(msg)
    nkt = kernel_function.n_terms
    nbt = background_function.n_terms if background_function is not None else 0
    first = 1 if constant_first_term else 0
    n_kernel_unknowns = (n_basis - 1) * nkt + 1 if constant_first_term else n_basis * nkt
    nt = n_kernel_unknowns + nbt
    n_local = n_basis + (1 if background_function is not None else 0)
    xs = np.array([c[0] for c in centres], dtype=np.float64)
    ys = np.array([c[1] for c in centres], dtype=np.float64)
    p_k = kernel_function.terms(xs, ys).T  # (n_cand, nkt)
    # P maps global unknowns to local coefficients, one (n_local, nt) block per candidate.
    mapping = np.zeros((len(centres), n_local, nt))
    if constant_first_term:
        mapping[:, 0, 0] = 1.0
    for i in range(first, n_basis):
        start = (i - 1) * nkt + 1 if constant_first_term else i * nkt
        mapping[:, i, start : start + nkt] = p_k
    if background_function is not None:
        p_b = background_function.terms(xs, ys).T
        mapping[:, n_basis, n_kernel_unknowns:] = p_b
    q = np.asarray(normal_matrices, dtype=np.float64)
    w = np.asarray(normal_vectors, dtype=np.float64)
    if q.shape[1:] != (n_local, n_local) or w.shape[1:] != (n_local,):
        msg = f"normal equations of shape {q.shape[1:]} do not match {n_local} local unknowns"
        raise ValueError(msg)
    matrix = np.einsum("cla,clm,cmb->ab", mapping, q, mapping, optimize=True)
    vector = np.einsum("cla,cl->a", mapping, w)
    matrix = 0.5 * (matrix + matrix.T)
    solution = solve_normal_equations(matrix, vector)
    cond = condition_number(matrix, condition_number_type)
    if not np.all(np.isfinite(solution)):
        msg = f"unable to determine spatial kernel solution (nan); condition number {cond:.3g}"
        raise ValueError(msg)
    coefficients = np.zeros((n_basis, nkt))
    if constant_first_term:
        coefficients[0, 0] = solution[0]
        coefficients[1:] = solution[1:n_kernel_unknowns].reshape(n_basis - 1, nkt)
    else:
        coefficients[:] = solution[:n_kernel_unknowns].reshape(n_basis, nkt)
    return SpatialFit(
        kernel_coefficients=coefficients,
        background_coefficients=solution[n_kernel_unknowns:].copy(),
        condition_number=cond,
        n_unknowns=nt,
    )
