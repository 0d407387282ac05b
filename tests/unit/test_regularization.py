"""Delta-function regularization and the choice of λ.

See docs/basis.md#regularization-matrix and docs/basis.md#choosing-lambda; ip_diffim's
own checks are in its tests/test_basisLists.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from psfmatch.basis import delta_function_basis
from psfmatch.errors import ConfigError
from psfmatch.fit import design_matrix, fit_candidate
from psfmatch.regularization import (
    LambdaRule,
    difference_operator,
    lambda_grid,
    regularization_matrix,
    risk_curve,
)

W = 21


def _coords(w=W):
    ys, xs = np.divmod(np.arange(w * w), w)
    return xs.astype(float), ys.astype(float)


def _interior(w=W):
    xs, ys = _coords(w)
    return (xs > 0) & (xs < w - 1) & (ys > 0) & (ys < w - 1)


@pytest.mark.parametrize("fit_background", [False, True])
@pytest.mark.parametrize(
    "kwargs",
    [{"regularization_type": "centralDifference", "stencil": 5},
     {"regularization_type": "centralDifference", "stencil": 9},
     {"regularization_type": "forwardDifference", "orders": (1, 2)},
     {"regularization_type": "forwardDifference", "orders": (3,)}],
)
def test_matrix_shape_symmetry_and_background_row(kwargs, fit_background):
    h = regularization_matrix(W, fit_background=fit_background, **kwargs)
    n = W * W + (1 if fit_background else 0)
    assert h.shape == (n, n)
    np.testing.assert_array_equal(h, h.T)
    # H = BᵀB is positive semi-definite (to rounding)
    assert np.linalg.eigvalsh(h).min() > -1e-10 * np.abs(h).max()
    if fit_background:  # the background is never penalised
        assert not h[-1].any()
        assert not h[:, -1].any()


@pytest.mark.parametrize(("stencil", "centre"), [(5, -4.0), (9, -20.0 / 6.0)])
def test_central_stencil_rows(stencil, centre):
    b = difference_operator(W, stencil=stencil, border_penalty=3.0)
    inside = np.flatnonzero(_interior())
    # every interior row is the stencil: it sums to 0 and has the documented centre
    np.testing.assert_allclose(b[inside].sum(axis=1), 0.0, atol=1e-13)
    np.testing.assert_allclose(b[inside, inside], centre)
    assert np.count_nonzero(b[inside[0]]) == (5 if stencil == 5 else 9)
    # border rows are p on the diagonal and nothing else
    border = np.flatnonzero(~_interior())
    np.testing.assert_array_equal(b[border, border], 3.0)
    assert np.count_nonzero(b[border]) == border.size


@pytest.mark.parametrize("stencil", [5, 9])
def test_laplacian_null_space_is_linear_ramps(stencil):
    xs, ys = _coords()
    ramp = 0.3 + 0.02 * xs - 0.05 * ys
    b = difference_operator(W, stencil=stencil, border_penalty=3.0)
    np.testing.assert_allclose(b[_interior()] @ ramp, 0.0, atol=1e-12)
    # with no border penalty a ramp costs nothing; with one, H is positive definite
    h0 = regularization_matrix(W, stencil=stencil, border_penalty=0.0)
    np.testing.assert_allclose(h0 @ ramp, 0.0, atol=1e-12)
    h3 = regularization_matrix(W, stencil=stencil, border_penalty=3.0)
    assert np.linalg.eigvalsh(h3).min() > 0
    # a curved kernel is penalised
    assert (xs - 10) ** 2 @ h0 @ (xs - 10) ** 2 > 0


@pytest.mark.parametrize("order", [1, 2, 3])
def test_forward_difference_annihilates_polynomials_below_its_order(order):
    xs, ys = _coords()
    b = difference_operator(W, regularization_type="forwardDifference", orders=(order,),
                            border_penalty=2.0)
    away = (xs < W - 1 - order) & (ys < W - 1 - order)
    for degree in range(order):
        poly = (xs / W) ** degree + 0.5 * (ys / W) ** degree
        np.testing.assert_allclose(b[away] @ poly, 0.0, atol=1e-12)
    assert np.abs(b[away] @ ((xs / W) ** order)).max() > 1e-6
    # rows of the last pixel along x and y: the order-0 coefficient p, twice (x and y)
    corner = W * W - 1
    assert b[corner, corner] == 4.0
    assert np.count_nonzero(b[corner]) == 1


def test_forward_orders_are_summed_before_squaring():
    b1 = difference_operator(W, regularization_type="forwardDifference", orders=(1,))
    b2 = difference_operator(W, regularization_type="forwardDifference", orders=(2,))
    h = regularization_matrix(W, regularization_type="forwardDifference", orders=(1, 2))
    np.testing.assert_allclose(h, (b1 + b2).T @ (b1 + b2))


@pytest.mark.parametrize(
    ("kwargs", "ok"),
    [({"stencil": 1}, False), ({"stencil": 5}, True), ({"stencil": 9}, True),
     ({"border_penalty": -1.0}, False), ({"border_penalty": 0.0}, True),
     ({"regularization_type": "forwardDifference", "orders": (0,)}, False),
     ({"regularization_type": "forwardDifference", "orders": (1,)}, True),
     ({"regularization_type": "forwardDifference", "orders": (4,)}, False),
     ({"regularization_type": "forwardDifference", "orders": (1, 2)}, True),
     ({"regularization_type": "foo"}, False)],
)
def test_regularization_config_checks(kwargs, ok):
    """ip_diffim test_basisLists: which settings raise."""
    if ok:
        assert regularization_matrix(5, **kwargs).shape == (25, 25)
    else:
        with pytest.raises(ConfigError):
            regularization_matrix(5, **kwargs)


def test_lambda_grid_and_simple_rules():
    grid = lambda_grid(step_type="log", minimum=-1.0, maximum=2.0, step=0.1)
    assert grid.size == 31
    assert grid[0] == pytest.approx(0.1)
    assert grid[-1] == pytest.approx(100.0)
    assert lambda_grid(step_type="linear", minimum=0.0, maximum=1.0, step=0.25).tolist() == [
        0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ConfigError, match="lambdaStep"):
        LambdaRule(lambda_type="minimizeUnbiasedRisk", step=0.0)
    m = np.diag([4.0, 6.0])
    h = np.diag([1.0, 1.0])
    assert LambdaRule(value=0.7).choose(m, np.ones(2), h, data_norm=1, n_data=9).value == 0.7
    rel = LambdaRule(lambda_type="relative", scaling=1e-2).choose(m, np.ones(2), h, data_norm=1,
                                                                  n_data=9)
    assert rel.value == pytest.approx(1e-2 * 10.0 / 2.0)


def test_regularized_fit_solves_the_penalised_system_and_beats_the_plain_fit():
    """(M + λH) a = β, and on a noisy DF candidate the penalty brings the kernel closer."""
    rng = np.random.default_rng(11)
    k, stamp = 11, 41
    template = _star_field(stamp, rng)
    kernel = _two_peak_kernel(k)
    science = _science(template, kernel)
    science = science + rng.normal(0.0, 5.0, science.shape)
    basis = delta_function_basis(k)
    h = regularization_matrix(k)
    var = np.full(science.shape, 25.0)
    plain = fit_candidate(template, science, var, basis, fit_background=False)
    lam = 3.0e4
    reg = fit_candidate(template, science, var, basis, fit_background=False,
                        regularization=h, regularization_lambda=lam)
    assert reg.regularization_lambda == lam
    lhs = (reg.normal_matrix + lam * h) @ reg.coefficients
    np.testing.assert_allclose(lhs, reg.normal_vector, rtol=1e-8, atol=1e-8 * np.abs(lhs).max())
    np.testing.assert_array_equal(reg.normal_matrix, plain.normal_matrix)  # M kept without λH
    err_plain = np.abs(plain.kernel - kernel).sum()
    err_reg = np.abs(reg.kernel - kernel).sum()
    assert err_reg < 0.5 * err_plain, (err_reg, err_plain)


# ---------------------------------------------------------------- risk-minimising λ
def _star_field(stamp, rng, n=3, flux=2.0e4, sigma=1.3):
    y, x = np.mgrid[0:stamp, 0:stamp] - (stamp - 1) / 2
    image = np.zeros((stamp, stamp))
    for cx, cy in rng.uniform(-stamp / 4, stamp / 4, (n, 2)):
        image += flux * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2)) / (
            2 * np.pi * sigma**2)
    return image


def _two_peak_kernel(k):
    h = k // 2
    v, u = np.mgrid[-h : h + 1, -h : h + 1]
    kern = 0.7 * np.exp(-((u - 0.5) ** 2 + v**2) / 4.5) + 0.3 * np.exp(
        -((u - 3) ** 2 + (v - 1.5) ** 2) / 4.5)
    return kern / kern.sum()


def _science(template, kernel):
    """Full-size science stamp whose valid region is ``kernel ⋆ template``."""
    k = kernel.shape[0]
    out = np.zeros_like(template)
    h = k // 2
    cols = design_matrix(template, kernel[None])
    out[h:-h, h:-h] = cols[:, 0].reshape(template.shape[0] - 2 * h, -1)
    return out


@pytest.mark.parametrize(("lambda_type", "max_steps"),
                         [("minimizeUnbiasedRisk", 1), ("minimizeBiasedRisk", 2)])
def test_risk_minimising_lambda_is_within_one_step_of_the_true_optimum(lambda_type, max_steps):
    """The λ chosen from one noisy realisation minimises the true predictive risk.

    Case: an 11×11 delta-function kernel (two Gaussian peaks, outside any single
    Gaussian) fitted on a 41×41 stamp of three stars with unit-weight noise σ = 5.
    The true predictive risk :math:`R(λ) = b_λᵀ M b_λ + tr(A_λ²)` is computed from the
    truth (see :func:`psfmatch.regularization.risk_curve`). The UPRE choice
    (``minimizeUnbiasedRisk``) must be within one 0.1-dex scan step of its minimiser in
    each of five noise realisations; GCV (``minimizeBiasedRisk``, which ignores the
    known noise level) within two. Either way the true risk at the chosen λ is within
    5 % of the minimum (the risk curve is flat there).
    """
    rng = np.random.default_rng(5)
    k, stamp, sigma = 11, 41, 5.0
    template = _star_field(stamp, rng)
    kernel = _two_peak_kernel(k)
    clean = _science(template, kernel)
    basis = delta_function_basis(k)
    h = regularization_matrix(k)
    rule = LambdaRule(lambda_type=lambda_type, minimum=2.0, maximum=7.0, step=0.1)
    grid = rule.grid()
    c = design_matrix(template, basis)
    m = c.T @ c / sigma**2
    a = kernel.ravel()
    true_risk = []
    for lam in grid:
        infl = np.linalg.solve(m + lam * h, m)
        bias = infl @ a - a
        true_risk.append(bias @ m @ bias + np.trace(infl @ infl))
    best = int(np.argmin(true_risk))
    assert 0 < best < grid.size - 1  # an interior optimum (here 10^4.3)
    var = np.full(clean.shape, sigma**2)
    for _ in range(5):
        science = clean + rng.normal(0.0, sigma, clean.shape)
        sol = fit_candidate(template, science, var, basis, fit_background=False,
                            regularization=h, regularization_lambda=rule)
        chosen = int(np.argmin(np.abs(np.log10(grid) - np.log10(sol.regularization_lambda))))
        assert abs(chosen - best) <= max_steps, (np.log10(grid[chosen]), np.log10(grid[best]))
        assert true_risk[chosen] < 1.05 * true_risk[best]
        assert not sol.lambda_at_grid_edge


def test_upre_is_unbiased_for_the_predictive_risk():
    """Mean of the UPRE curve over realisations ≈ the true risk (to 4 standard errors)."""
    rng = np.random.default_rng(8)
    k, stamp, sigma = 7, 31, 5.0
    template = _star_field(stamp, rng, n=2)
    kernel = _two_peak_kernel(k)
    clean = _science(template, kernel)
    h = regularization_matrix(k)
    c = design_matrix(template, delta_function_basis(k))
    s0 = clean[k // 2 : -(k // 2), k // 2 : -(k // 2)].ravel()
    m = c.T @ c / sigma**2
    grid = np.array([1e3, 1e4, 1e5])
    curves = []
    for _ in range(200):
        s = s0 + rng.normal(0.0, sigma, s0.shape)
        risks, _ = risk_curve(m, c.T @ s / sigma**2, h, grid, data_norm=float(s @ s) / sigma**2,
                              n_data=s.size, estimator="upre")
        curves.append(risks)
    curves = np.array(curves)
    a = kernel.ravel()
    for j, lam in enumerate(grid):
        infl = np.linalg.solve(m + lam * h, m)
        bias = infl @ a - a
        truth = bias @ m @ bias + np.trace(infl @ infl)
        err = curves[:, j].std(ddof=1) / np.sqrt(len(curves))
        assert abs(curves[:, j].mean() - truth) < 4 * err, (lam, curves[:, j].mean(), truth)
