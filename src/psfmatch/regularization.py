"""Smoothness penalty for delta-function kernels and the choice of its weight λ.

A delta-function (DF) kernel of side ``w`` has ``N = w²`` free pixels, ``a_i`` with
``i = row · w + col`` (docs/basis.md#delta-function-basis). Fitted alone each candidate's
kernel is noisy, so ip_diffim adds a quadratic penalty to its normal equations
(docs/basis.md#regularization-matrix, docs/basis.md#choosing-lambda):

.. math::  (M + \\lambda H)\\, a = \\beta, \\qquad H = B^T B,

with ``B`` a finite-difference operator on the kernel image (a discrete Laplacian, or a
sum of one-sided differences) and a diagonal penalty ``p`` on the border pixels. When a
constant background is fitted the system has one more unknown, whose row and column of
``B`` (hence of ``H``) are zero: the background is never penalised.

λ is ``lambdaValue`` (``absolute``), ``lambdaScaling · tr(M)/tr(H)`` (``relative``), or
the minimum over a grid of an estimated risk (``minimizeUnbiasedRisk`` /
``minimizeBiasedRisk``, see :func:`risk_curve` for the estimators and why they differ
from ip_diffim's). λ is in the units of ``M`` (inverse variance × template flux²), so
an absolute λ or a λ grid suits one data set, not all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from psfmatch.errors import ConfigError

__all__ = [
    "CENTRAL_STENCILS",
    "FORWARD_COEFFICIENTS",
    "LambdaChoice",
    "LambdaRule",
    "difference_operator",
    "lambda_grid",
    "regularization_matrix",
    "risk_curve",
]

#: Laplacian stencils ``c[dy + 1, dx + 1]`` (docs/basis.md#regularization-matrix).
CENTRAL_STENCILS: dict[int, np.ndarray] = {
    5: np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]),
    9: np.array([[1.0, 4.0, 1.0], [4.0, -20.0, 4.0], [1.0, 4.0, 1.0]]) / 6.0,
}

#: One-sided difference coefficients of order 1..3 (order 0, the far edge, is ``[p]``).
FORWARD_COEFFICIENTS: dict[int, tuple[float, ...]] = {
    1: (-1.0, 1.0),
    2: (-1.0, 2.0, -1.0),
    3: (-1.0, 3.0, -3.0, 1.0),
}

REGULARIZATION_TYPES = ("centralDifference", "forwardDifference")
LAMBDA_TYPES = ("absolute", "relative", "minimizeBiasedRisk", "minimizeUnbiasedRisk")


def difference_operator(
    kernel_size: int,
    *,
    regularization_type: str = "centralDifference",
    stencil: int = 9,
    orders: tuple[int, ...] = (1, 2),
    border_penalty: float = 3.0,
) -> np.ndarray:
    """The operator ``B`` (``N × N``, ``N = kernel_size²``) of the penalty ``H = Bᵀ B``.

    See docs/basis.md#regularization-matrix.

    ``centralDifference``: row ``i`` of an interior pixel (``0 < x < w−1`` and
    ``0 < y < w−1``) holds the Laplacian stencil centred on ``i``; a border pixel's row is
    ``p`` on the diagonal. ``forwardDifference``: for each order ``o`` in ``orders``,
    row ``i`` of ``B_x,o`` holds the order-``min(w − x − 1, o)`` coefficients at columns
    ``i … i + o_x`` (and ``[p]`` at the last column), ``B_y,o`` likewise along ``y`` with
    stride ``w``; ``B = Σ_o (B_x,o + B_y,o)`` (summed before squaring, as ip_diffim does).

    Raises
    ------
    ConfigError
        Unknown type, a stencil other than 5 or 9, an order outside 1..3, or ``p < 0``;
        the message names the ip_diffim field.
    """
    if regularization_type not in REGULARIZATION_TYPES:
        msg = (f"regularizationType must be one of {REGULARIZATION_TYPES}, "
               f"got {regularization_type!r}")
        raise ConfigError(msg)
    if not border_penalty >= 0:
        msg = f"regularizationBorderPenalty must be >= 0, got {border_penalty}"
        raise ConfigError(msg)
    if kernel_size < 1 or kernel_size % 2 == 0:
        msg = f"kernelSize must be a positive odd integer, got {kernel_size}"
        raise ConfigError(msg)
    w = kernel_size
    n = w * w
    b = np.zeros((n, n))
    ys, xs = np.divmod(np.arange(n), w)
    if regularization_type == "centralDifference":
        if stencil not in CENTRAL_STENCILS:
            msg = f"centralRegularizationStencil must be 5 or 9, got {stencil}"
            raise ConfigError(msg)
        coeffs = CENTRAL_STENCILS[stencil]
        interior = (xs > 0) & (xs < w - 1) & (ys > 0) & (ys < w - 1)
        rows = np.flatnonzero(interior)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if coeffs[dy + 1, dx + 1] != 0.0:
                    b[rows, rows + dx + dy * w] += coeffs[dy + 1, dx + 1]
        border = np.flatnonzero(~interior)
        b[border, border] = border_penalty
        return b
    if not orders or any(o not in FORWARD_COEFFICIENTS for o in orders):
        msg = f"forwardRegularizationOrders entries must be 1, 2 or 3, got {list(orders)}"
        raise ConfigError(msg)
    for order in orders:
        for along_x in (True, False):
            room = (w - xs - 1) if along_x else (w - ys - 1)
            stride = 1 if along_x else w
            for i in range(n):
                o = min(int(room[i]), order)
                coefficients = FORWARD_COEFFICIENTS[o] if o > 0 else (border_penalty,)
                for j, c in enumerate(coefficients):
                    b[i, i + j * stride] += c
    return b


def regularization_matrix(
    kernel_size: int,
    *,
    regularization_type: str = "centralDifference",
    stencil: int = 9,
    orders: tuple[int, ...] = (1, 2),
    border_penalty: float = 3.0,
    fit_background: bool = False,
) -> np.ndarray:
    """``H = Bᵀ B`` (docs/basis.md#regularization-matrix), with a zero background row/column
    when fitted.

    Returns
    -------
    ndarray, shape (N + nb, N + nb)
        ``N = kernel_size²``, ``nb = 1`` if ``fit_background`` else 0. Symmetric,
        positive semi-definite.
    """
    b = difference_operator(
        kernel_size, regularization_type=regularization_type, stencil=stencil,
        orders=tuple(orders), border_penalty=border_penalty,
    )
    h = b.T @ b
    if fit_background:
        n = h.shape[0]
        padded = np.zeros((n + 1, n + 1))
        padded[:n, :n] = h
        h = padded
    return h


def lambda_grid(*, step_type: str, minimum: float, maximum: float, step: float) -> np.ndarray:
    """The λ values scanned by the risk modes (docs/basis.md#choosing-lambda).

    ``log``: ``λ = 10^l`` for ``l = minimum, minimum + step, … ≤ maximum``;
    ``linear``: ``λ = minimum, minimum + step, … ≤ maximum``.
    """
    if not step > 0:
        msg = f"lambdaStep must be > 0, got {step}"
        raise ConfigError(msg)
    if maximum < minimum:
        msg = f"lambdaMax ({maximum}) is below lambdaMin ({minimum})"
        raise ConfigError(msg)
    count = int(math.floor((maximum - minimum) / step + 1e-9)) + 1
    values = minimum + step * np.arange(count)
    if step_type == "log":
        return 10.0**values
    if step_type == "linear":
        if minimum < 0:
            msg = f"lambdaMin must be >= 0 for a linear scan, got {minimum}"
            raise ConfigError(msg)
        return values
    msg = f"lambdaStepType must be 'log' or 'linear', got {step_type!r}"
    raise ConfigError(msg)


def risk_curve(
    matrix: np.ndarray,
    vector: np.ndarray,
    regularization: np.ndarray,
    lambdas: np.ndarray,
    *,
    data_norm: float,
    n_data: int,
    estimator: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Estimated predictive risk of the regularized solution for every λ of ``lambdas``.

    With weights ``W`` (inverse variances), design matrix ``C``, data ``s``,
    ``M = CᵀWC``, ``β = CᵀWs``, ``a_λ = (M + λH)⁻¹β`` and the influence matrix
    ``A_λ = (M + λH)⁻¹M``, the *predictive risk* is the expected weighted squared error
    of the fitted model, :math:`R(\\lambda) = E\\,\\|C(a_\\lambda - a)\\|_W^2
    = b_\\lambda^T M b_\\lambda + \\mathrm{tr}(A_\\lambda^2)` with bias
    :math:`b_\\lambda = (A_\\lambda - I)a`. Two estimators from one realisation, both
    using only ``M``, ``β``, ``sᵀWs`` (``data_norm``) and the number of data ``n``:

    * ``"upre"`` (``minimizeUnbiasedRisk``), the unbiased predictive risk estimator
      (Mallows' C_p / SURE):
      :math:`U(\\lambda) = \\|s - C a_\\lambda\\|_W^2 + 2\\,\\mathrm{tr}A_\\lambda - n`,
      with :math:`E[U] = R` when the weights are the true inverse variances.
    * ``"gcv"`` (``minimizeBiasedRisk``), generalised cross-validation:
      :math:`G(\\lambda) = n\\,\\|s - C a_\\lambda\\|_W^2 / (n - \\mathrm{tr}A_\\lambda)^2`,
      a biased estimate of the same minimiser that does not need the weights'
      absolute scale (e.g. with ``constantVarianceWeighting``).

    Why not ip_diffim's estimator: its ``estimateRisk`` targets the *coefficient* risk
    :math:`E\\|a_\\lambda - a\\|^2` through
    :math:`a_\\lambda^T a_\\lambda - 2 a_\\lambda^T M^+ \\beta + 2\\,\\mathrm{tr}(M +
    \\lambda H)^{-1}` (unbiased up to a constant, with the exact inverse; "biased"
    with the eigenvalues above ``maxConditionNumber`` dropped). On a delta-function
    system the unregularized :math:`M^+\\beta` it needs is dominated by noise: on a
    simulated 11×11 DF candidate (optimum λ = 10^4.6) its minimiser lay 3.7 to 5.6
    decades too low in 6 of 6 realisations (3 on the grid's lower edge), and the
    truncated variant chose, in 1 of 8, a λ with 890 times the optimal coefficient risk;
    UPRE picked the optimum within one 0.1-dex step in 8 of 8. It also never ran: the
    C++ reads the scan limits under names the config does not define
    (``lambdaLogMin`` …), so both modes throw (docs/basis.md#risk-estimators). Here the scan uses
    ``lambdaMin/Max/Step`` (:func:`lambda_grid`).

    The scan costs one generalised eigen-decomposition: with ``UᵀMU = I`` and
    ``UᵀHU = Λ`` (``M`` made positive definite by a ``1e-12·tr(M)/n`` ridge),
    ``z = Uᵀβ``, every quantity is a sum over ``z_j² / (1 + λΛ_j)^p``.

    Returns
    -------
    risks : ndarray
        The estimate for every λ.
    traces : ndarray
        ``tr A_λ`` (effective number of parameters) for every λ.
    """
    import scipy.linalg

    if estimator not in ("upre", "gcv"):
        msg = f"risk estimator must be 'upre' or 'gcv', got {estimator!r}"
        raise ValueError(msg)
    m = np.asarray(matrix, dtype=np.float64)
    h = np.asarray(regularization, dtype=np.float64)
    beta = np.asarray(vector, dtype=np.float64)
    n = m.shape[0]
    ridge = 1e-12 * float(np.trace(m)) / n
    eigenvalues, u = scipy.linalg.eigh(h, m + ridge * np.eye(n))
    eigenvalues = np.clip(eigenvalues, 0.0, None)  # H is positive semi-definite
    z2 = (u.T @ beta) ** 2
    lambdas = np.asarray(lambdas, dtype=np.float64)
    shrink = 1.0 / (1.0 + lambdas[:, None] * eigenvalues[None, :])  # (n_lambda, n)
    a_beta = shrink @ z2
    a_m_a = (shrink**2) @ z2
    rss = data_norm - 2.0 * a_beta + a_m_a
    trace = shrink.sum(axis=1)
    if estimator == "upre":
        return rss + 2.0 * trace - n_data, trace
    return n_data * rss / (n_data - trace) ** 2, trace


@dataclass(frozen=True)
class LambdaChoice:
    """The λ used for one candidate, how it was found, and the scan (risk modes)."""

    value: float
    method: str
    at_grid_edge: bool = False


@dataclass(frozen=True, kw_only=True)
class LambdaRule:
    """How λ is chosen (``lambdaType`` and its parameters, docs/basis.md#choosing-lambda)."""

    lambda_type: str = "absolute"
    value: float = 0.2
    scaling: float = 1e-4
    step_type: str = "log"
    minimum: float = -1.0
    maximum: float = 2.0
    step: float = 0.1

    def __post_init__(self) -> None:
        if self.lambda_type not in LAMBDA_TYPES:
            msg = f"lambdaType must be one of {LAMBDA_TYPES}, got {self.lambda_type!r}"
            raise ConfigError(msg)
        if self.lambda_type in ("minimizeBiasedRisk", "minimizeUnbiasedRisk"):
            self.grid()  # validate the scan now, not per candidate

    def grid(self) -> np.ndarray:
        """The scanned λ values."""
        return lambda_grid(step_type=self.step_type, minimum=self.minimum,
                           maximum=self.maximum, step=self.step)

    def choose(
        self, matrix: np.ndarray, vector: np.ndarray, regularization: np.ndarray, *,
        data_norm: float, n_data: int,
    ) -> LambdaChoice:
        """λ for one candidate's system.

        ``absolute``: ``value``; ``relative``: ``scaling · tr(M)/tr(H)``;
        ``minimizeUnbiasedRisk`` / ``minimizeBiasedRisk``: the grid point minimising
        the UPRE / GCV estimate of :func:`risk_curve`.
        """
        if self.lambda_type == "absolute":
            return LambdaChoice(float(self.value), self.lambda_type)
        if self.lambda_type == "relative":
            trace_h = float(np.trace(regularization))
            if trace_h == 0:
                msg = "regularization matrix has zero trace; lambdaType 'relative' is undefined"
                raise ConfigError(msg)
            return LambdaChoice(float(self.scaling * np.trace(matrix) / trace_h), self.lambda_type)
        grid = self.grid()
        estimator = "upre" if self.lambda_type == "minimizeUnbiasedRisk" else "gcv"
        risks, _ = risk_curve(matrix, vector, regularization, grid, data_norm=data_norm,
                              n_data=n_data, estimator=estimator)
        best = int(np.argmin(risks))
        return LambdaChoice(float(grid[best]), self.lambda_type,
                            at_grid_edge=len(grid) > 1 and best in (0, len(grid) - 1))
