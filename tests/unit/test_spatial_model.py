"""The spatial model of spatial_fit under the kernel_fit section (steps.spatial_model)."""

from __future__ import annotations

import numpy as np
import pytest
from tests.fidelity_helpers import gaussian_kernel, stamp_set

from psfmatch.basis import delta_function_basis
from psfmatch.candidates import FitOptions
from psfmatch.config import KernelFitOptions, PsfMatchConfig, check_kernel_fit
from psfmatch.errors import ConfigError
from psfmatch.fit import fit_candidate
from psfmatch.lambda_choice import RelativeRiskRule, candidate_systems
from psfmatch.regularization import regularization_matrix
from psfmatch.spatial import SpatialFunction
from psfmatch.steps.spatial_model import fit_spatial_model, is_pooled, pooled_single_fit_setup

K = 7
BBOX = (0, 0, 999, 999)
DF_CONFIG = PsfMatchConfig.from_lsst({"kernelBasisSet": "delta-function"})


def test_config_section_defaults_and_checks():
    kf = KernelFitOptions()
    assert (kf.df_spatial_fit, kf.spatial_order, kf.estimate_saturation) == (
        "pooled", "cross_validated", True)
    with pytest.raises(ConfigError, match="kernel_fit.df_spatial_fit"):
        KernelFitOptions.from_dict({"df_spatial_fit": "pca"}, where="kernel_fit")
    with pytest.raises(ConfigError, match="df_lambda_range"):
        KernelFitOptions(df_lambda_range=(3.0, -8.0))
    with pytest.raises(ConfigError, match="unknown key"):
        KernelFitOptions.from_dict({"spatial_orders": "configured"}, where="kernel_fit")
    # an explicit PCA request and the pooled fit contradict each other ...
    with pytest.raises(ConfigError, match="usePcaForSpatialKernel"):
        check_kernel_fit({"kernelBasisSet": "delta-function", "usePcaForSpatialKernel": True},
                         kf)
    # ... but not the basis' default (null) or the ip_diffim path
    check_kernel_fit({"kernelBasisSet": "delta-function", "usePcaForSpatialKernel": None}, kf)
    check_kernel_fit({"kernelBasisSet": "delta-function", "usePcaForSpatialKernel": True},
                     KernelFitOptions(df_spatial_fit="ip_diffim"))
    assert is_pooled(DF_CONFIG, kf)
    assert not is_pooled(PsfMatchConfig(), kf)


def _candidates(rng, n, kernel_at, *, fluxes, stamp=2 * K + 9):
    xy = rng.uniform(0, 999, (n, 2))
    template, science = stamp_set(rng, n, stamp=stamp, kernel=lambda i: kernel_at(*xy[i]),
                                  fluxes=fluxes)
    systems, _ = candidate_systems(template, science, delta_function_basis(K),
                                   fit_background=True, constant_variance_weighting=False)
    return (xy, np.array([s.matrix for s in systems]), np.array([s.vector for s in systems]),
            template, science)


def test_relative_risk_lambda_does_not_depend_on_flux_units():
    """Template and science × 1000 (variances × 10⁶): the same kernel, λ × 10⁶ / 10⁶·10⁶."""
    rng = np.random.default_rng(5)
    _, _, _, template, science = _candidates(rng, 1, lambda x, y: gaussian_kernel(K, 1.2),
                                             fluxes=[3e4])
    basis = delta_function_basis(K)
    h = regularization_matrix(K, fit_background=True)
    rule = RelativeRiskRule()
    kernels, lambdas = [], []
    for scale in (1.0, 1000.0):
        sol = fit_candidate(template[0][0] * scale, science[0][0] * scale,
                            (science[1][0] + template[1][0]) * scale**2, basis,
                            fit_background=True, constant_variance_weighting=False,
                            regularization=h, regularization_lambda=rule)
        kernels.append(sol.kernel)
        lambdas.append(sol.regularization_lambda)
    # M scales as flux² / variance = 1: λ is the same number, in either unit, and the
    # kernels agree to rounding (the scan's relative ridge, 1e-12 tr M, and float32 stamps)
    assert lambdas[1] == pytest.approx(lambdas[0], rel=1e-6)
    np.testing.assert_allclose(kernels[1], kernels[0], atol=1e-6 * np.abs(kernels[0]).max())


def test_pooled_single_fits_weight_by_inverse_variance_and_scan_relative():
    options = FitOptions.from_config(DF_CONFIG, bad_bits=0)
    assert options.constant_variance_weighting  # ip_diffim's default ...
    pooled, description = pooled_single_fit_setup(DF_CONFIG, KernelFitOptions(), options, K)
    assert not pooled.constant_variance_weighting  # ... replaced for the pooled fit
    assert isinstance(pooled.regularization_lambda, RelativeRiskRule)
    assert pooled.regularization.shape == (K * K, K * K)  # fitForBackground false
    assert description["lambda_scan_relative"] == [-8.0, 3.0, 0.05]


def _kernel_quadratic(x, y):
    """Width varying quadratically across the field (order 2 needed), sum 0.9."""
    u, v = x / 500.0 - 1.0, y / 500.0 - 1.0
    return gaussian_kernel(K, 1.1 + 0.25 * (u * u + v * v) - 0.15, scale=0.9)


@pytest.fixture(scope="module")
def quadratic():
    rng = np.random.default_rng(21)
    return _candidates(rng, 120, _kernel_quadratic, fluxes=10 ** rng.uniform(4.0, 5.0, 120))


def _kernel_linear(x, y):
    """Width and centre varying linearly (order 1 suffices), sum 0.9."""
    u, v = x / 500.0 - 1.0, y / 500.0 - 1.0
    return gaussian_kernel(K, 1.0 + 0.1 * u, dx=0.2 * v, dy=-0.1 * u, scale=0.9)


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(11)
    return _candidates(rng, 60, _kernel_linear, fluxes=10 ** rng.uniform(3.5, 4.5, 60))


def _fit(candidates, pm, kernel_fit, order=1, constant_first_term=False):
    xy, q, w, _, _ = candidates
    return fit_spatial_model(
        [tuple(c) for c in xy], q, w, n_basis=K * K,
        kernel_function=SpatialFunction(order, "chebyshev1", BBOX),
        background_function=SpatialFunction(0, "chebyshev1", BBOX),
        constant_first_term=constant_first_term, pm=pm, kernel_fit=kernel_fit,
        kernel_size=K, label="t")


def test_cross_validation_raises_the_order_and_never_lowers_it(quadratic):
    """The search runs for a basis with a constant first term (AL, PCA); the pixel basis
    here with its corner pixel held constant stands in for one (its truth is ~0)."""
    pm = PsfMatchConfig.from_lsst({"kernelBasisSet": "delta-function",
                                   "usePcaForSpatialKernel": False})
    ip = KernelFitOptions(df_spatial_fit="ip_diffim")
    assert _fit(quadratic, pm, ip).order_search is None  # k² free pixels: not searched
    model = _fit(quadratic, pm, ip, constant_first_term=True)
    assert model.order_search["orders"] == [1, 2, 3, 4]
    assert model.order_search["chosen"] >= 2  # the quadratic variation is seen
    assert model.solved.kernel_function.order == model.order_search["chosen"]
    assert model.solved.fit.covariance is not None  # always, for the accuracy report
    # from a configured order of 3 the search starts at 3
    assert _fit(quadratic, pm, ip, order=3,
                constant_first_term=True).order_search["orders"][0] == 3
    # configured: no search
    fixed = _fit(quadratic, pm, KernelFitOptions(df_spatial_fit="ip_diffim",
                                                 spatial_order="configured"),
                 constant_first_term=True)
    assert fixed.order_search is None
    assert fixed.solved.kernel_function.order == 1


def test_pooled_fit_records_its_lambda_and_keeps_the_order(linear):
    model = _fit(linear, DF_CONFIG, KernelFitOptions())
    assert model.order_search is None  # not applied to the pooled fit
    assert model.solved.kernel_function.order == 1
    assert not model.pooled["at_scan_edge"]
    assert not model.pooled["scan_too_narrow"]
    assert model.pooled["value"] == pytest.approx(model.pooled["relative"]
                                                  * model.pooled["reference"])
    fit = model.solved.fit
    function = SpatialFunction(1, "chebyshev1", BBOX)
    sums = [(fit.kernel_coefficients @ function.terms(x, y)).sum()
            for x, y in ((0, 0), (999, 0), (500, 500))]
    # the kernel sum is held constant over the field ...
    assert np.ptp(sums) < 1e-10
    # ... and is the truth's (0.9) within 4σ of the fit's own error (the shape prior
    # leaves the amplitude to the data: no bias on the sum)
    gradient = np.kron(np.ones(K * K), function.terms(500, 500))
    n = gradient.size
    sigma = float(np.sqrt(gradient @ fit.covariance[:n, :n] @ gradient))
    assert abs(sums[2] - 0.9) < 4 * sigma
