"""Spatial model of the kernel and background.

Spatial functions: docs/conventions.md#spatial-functions; the joint fit:
docs/fitting.md#spatial-fit.

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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.polynomial import chebyshev

from psfmatch.basis import polynomial_terms
from psfmatch.errors import PsfMatchError
from psfmatch.fit import condition_number, solve_normal_equations

__all__ = [
    "ReducedOrderFit",
    "SpatialFit",
    "SpatialFitError",
    "SpatialFunction",
    "fit_lowering_orders",
    "fit_spatial",
    "fit_spatial_reducing_order",
    "geometric_condition",
    "n_terms",
]

MODEL_TYPES = ("chebyshev1", "polynomial")


class SpatialFitError(PsfMatchError, ValueError):
    """The joint spatial system cannot be solved (no candidates, singular, NaN)."""


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
    covariance : ndarray or None
        With ``compute_covariance``: covariance of the parameter vector
        ``[kernel_coefficients.ravel(), background_coefficients]`` (size
        ``n_basis·n_kernel_terms + n_bg_terms``), the inverse of the spatial normal
        matrix mapped to that layout (coefficients held at zero have zero variance).
    """

    kernel_coefficients: np.ndarray
    background_coefficients: np.ndarray
    condition_number: float
    n_unknowns: int
    covariance: np.ndarray | None = None


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
    compute_covariance: bool = False,
) -> SpatialFit:
    """Joint spatial solution from the candidates' normal equations (docs/fitting.md#spatial-fit).

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
    compute_covariance : bool
        Also return the covariance of the solution, :math:`M_s^{-1}` (the inverse used
        by the solve: exact when full rank, else the eigen pseudo-inverse). It is the
        covariance of the estimate when each candidate's normal equations carry the
        inverse variances of its residuals as weights (``calculateKernelUncertainty``;
        declared but never implemented in ip_diffim; docs/fitting.md#kernel-uncertainty). It is
        conditional on the basis (a PCA basis is itself estimated from the data) and
        ignores the noise of the template stamps beyond what the weights include.

    Returns
    -------
    SpatialFit
    """
    if not centres:
        msg = "the spatial fit needs at least one candidate"
        raise SpatialFitError(msg)
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
        raise SpatialFitError(msg)
    covariance = None
    if compute_covariance:
        inverse = _inverse(matrix)
        # G maps the unknowns to the parameter vector [coefficients.ravel(), background]
        layout = np.zeros((n_basis * nkt + nbt, nt))
        if constant_first_term:
            layout[0, 0] = 1.0
            layout[nkt:n_basis * nkt, 1:n_kernel_unknowns] = np.eye(n_kernel_unknowns - 1)
        else:
            layout[: n_basis * nkt, :n_kernel_unknowns] = np.eye(n_kernel_unknowns)
        layout[n_basis * nkt :, n_kernel_unknowns:] = np.eye(nbt)
        covariance = layout @ inverse @ layout.T
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
        covariance=covariance,
    )


#: Largest accepted condition number of ``PᵀP``, ``P`` the spatial terms at the
#: candidate centres (see :func:`fit_spatial_reducing_order`).
MAX_GEOMETRIC_CONDITION = 1.0e4


def geometric_condition(function: SpatialFunction, xs: np.ndarray, ys: np.ndarray) -> float:
    """Condition number of ``PᵀP``, ``P[c, t]`` = term ``t`` at candidate ``c``.

    It measures how well the candidate positions alone pin down a spatial function of
    this family: about 4–20 for candidates spread over the whole bbox (orders 1–3),
    ``inf`` when there are fewer distinct positions than terms; coefficient errors grow
    roughly as its square root.
    """
    p = function.terms(np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)).T
    return condition_number(p.T @ p, "SVD")


@dataclass(frozen=True)
class ReducedOrderFit:
    """A spatial fit that may have lowered its orders to stay well posed.

    Attributes
    ----------
    fit : SpatialFit
        The accepted solution.
    kernel_function, background_function : SpatialFunction, SpatialFunction or None
        The families actually used (orders possibly lower than requested).
    attempts : list of dict
        Every order pair tried, in order: ``kernel_order``, ``background_order``,
        ``geometric_condition`` (largest of kernel and background), ``condition_number``
        (of the spatial normal matrix) and ``refused`` (why, or ``None`` when accepted).
    """

    fit: SpatialFit
    kernel_function: SpatialFunction
    background_function: SpatialFunction | None
    attempts: list[dict]

    @property
    def reduced(self) -> bool:
        """Whether the accepted orders are lower than the requested ones."""
        return len(self.attempts) > 1


def fit_spatial_reducing_order(
    centres: Sequence[tuple[float, float]],
    normal_matrices: Sequence[np.ndarray],
    normal_vectors: Sequence[np.ndarray],
    *,
    n_basis: int,
    kernel_function: SpatialFunction,
    background_function: SpatialFunction | None,
    constant_first_term: bool,
    condition_number_type: str = "EIGENVALUE",
    compute_covariance: bool = False,
    max_geometric_condition: float = MAX_GEOMETRIC_CONDITION,
) -> ReducedOrderFit:
    """:func:`fit_spatial`, lowering the spatial orders while the system is ill-posed.

    The condition number of the joint spatial matrix mixes two things: the
    conditioning of the kernel basis (large for AL, 1e10+ on real data, and the same at
    every spatial order) and how well the candidate positions constrain the spatial
    functions. Only the second depends on the order, so it is what is tested:
    :func:`geometric_condition` of the kernel and background families at the candidate
    centres must not exceed ``max_geometric_condition`` (1e4: a coefficient noise
    amplification of ~100; candidates bunched in a corner a quarter of the image wide
    give ~4e4 at order 2), and the solution must be finite. Each refusal lowers both
    orders by one (not below 0) and refits. (ip_diffim only warns about a large spatial
    condition number; the caller still does, on ``maxSpatialConditionNumber``.)

    Raises
    ------
    SpatialFitError
        The solution is not finite even with constant spatial functions; the message
        lists every attempt.
    """
    def solve(kf: SpatialFunction, bf: SpatialFunction | None) -> tuple[SpatialFit, None]:
        fit = fit_spatial(centres, normal_matrices, normal_vectors, n_basis=n_basis,
                          kernel_function=kf, background_function=bf,
                          constant_first_term=constant_first_term,
                          condition_number_type=condition_number_type,
                          compute_covariance=compute_covariance)
        return fit, None

    reduced, _ = fit_lowering_orders(
        centres, kernel_function, background_function, solve,
        max_geometric_condition=max_geometric_condition,
        failure="the spatial kernel system is ill-posed at every order tried")
    return reduced


def fit_lowering_orders(
    centres: Sequence[tuple[float, float]],
    kernel_function: SpatialFunction,
    background_function: SpatialFunction | None,
    solve: Callable[[SpatialFunction, SpatialFunction | None], tuple[SpatialFit, Any]],
    *,
    max_geometric_condition: float = MAX_GEOMETRIC_CONDITION,
    failure: str = "the spatial fit failed at every order tried",
) -> tuple[ReducedOrderFit, Any]:
    """Call ``solve(kernel_function, background_function)``, lowering both orders on refusal.

    An order pair is refused when :func:`geometric_condition` at the candidate centres
    exceeds ``max_geometric_condition`` (``solve`` is then not called) or when ``solve``
    raises :class:`SpatialFitError`; both orders are then lowered by one (not below 0).
    Returns the accepted fit with every attempt, and what ``solve`` returned beside the
    fit. Raises :class:`SpatialFitError` (``failure``, then every attempt) when constant
    functions are refused too.
    """
    xs = np.array([c[0] for c in centres], dtype=np.float64)
    ys = np.array([c[1] for c in centres], dtype=np.float64)
    attempts: list[dict] = []
    kf, bf = kernel_function, background_function
    while True:
        geometric = max(geometric_condition(f, xs, ys) for f in (kf, bf) if f is not None)
        record = {"kernel_order": kf.order, "background_order": None if bf is None else bf.order,
                  "geometric_condition": geometric, "condition_number": None, "refused": None}
        accepted = None
        if not geometric <= max_geometric_condition:
            record["refused"] = ("candidate positions constrain the spatial terms poorly "
                                 f"(geometric condition {geometric:.3g} > "
                                 f"{max_geometric_condition:.3g})")
        else:
            try:
                accepted = solve(kf, bf)
                record["condition_number"] = accepted[0].condition_number
            except SpatialFitError as exc:
                record["refused"] = str(exc)
        attempts.append(record)
        if accepted is not None:
            return ReducedOrderFit(accepted[0], kf, bf, attempts), accepted[1]
        if kf.order == 0 and (bf is None or bf.order == 0):
            tried = "; ".join(
                f"kernel order {a['kernel_order']}, background order {a['background_order']}: "
                f"{a['refused']}" for a in attempts)
            raise SpatialFitError(f"{failure} ({tried})")
        kf = SpatialFunction(max(kf.order - 1, 0), kf.model_type, kf.bbox)
        if bf is not None:
            bf = SpatialFunction(max(bf.order - 1, 0), bf.model_type, bf.bbox)


def _inverse(matrix: np.ndarray) -> np.ndarray:
    """Inverse consistent with :func:`~psfmatch.fit.solve_normal_equations`."""
    values, vectors = np.linalg.eigh(matrix)
    largest = float(np.abs(values).max()) if values.size else 0.0
    tolerance = np.finfo(np.float64).eps * matrix.shape[0] * largest
    if largest > 0 and np.all(np.abs(values) > tolerance):
        inverse = np.linalg.inv(matrix)
        return 0.5 * (inverse + inverse.T)
    inv_values = np.zeros_like(values)
    nonzero = values != 0
    inv_values[nonzero] = 1.0 / values[nonzero]
    return (vectors * inv_values) @ vectors.T
