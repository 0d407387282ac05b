"""One common λ for delta-function candidates, chosen from the data (lambda_choice)."""

from __future__ import annotations

import numpy as np
import pytest
from tests.fidelity_helpers import gaussian_kernel, stamp_set

from psfmatch.basis import delta_function_basis
from psfmatch.errors import ConfigError
from psfmatch.fit import CandidateSystem
from psfmatch.lambda_choice import (
    candidate_systems,
    choose_common_lambda,
    joint_criterion,
    reference_lambda,
)
from psfmatch.regularization import regularization_matrix, risk_curve

K = 9  # 81 delta functions: small enough for a fast test, large enough to need λ
STAMP = 2 * K + 9


@pytest.fixture(scope="module")
def candidates():
    rng = np.random.default_rng(5)
    truth = gaussian_kernel(K, 1.2, dx=0.3, dy=-0.2, scale=1.1)
    fluxes = 10 ** rng.uniform(3.3, 4.5, 24)  # S/N ~ 30 .. 400 at sky variance 100
    template, science = stamp_set(rng, fluxes.size, stamp=STAMP, kernel=truth, fluxes=fluxes)
    basis = delta_function_basis(K)
    systems, used = candidate_systems(template, science, basis, fit_background=False,
                                      constant_variance_weighting=False)
    return truth, systems, used, template, science


def test_joint_upre_is_the_sum_of_per_candidate_upre(candidates):
    _, systems, _, _, _ = candidates
    h = regularization_matrix(K)
    lambdas = np.array([1.0, 30.0, 1000.0])
    from psfmatch.lambda_choice import _range_logdet, _spectrum

    spectra = [_spectrum(s, h, _range_logdet(h)) for s in systems]
    joint, _ = joint_criterion(spectra, lambdas, estimator="upre")
    single = sum(risk_curve(s.matrix, s.vector, h, lambdas, data_norm=s.data_norm,
                            n_data=s.n_data, estimator="upre")[0] for s in systems)
    np.testing.assert_allclose(joint, single, rtol=1e-9)


def test_common_lambda_is_near_the_true_risk_minimum(candidates):
    """UPRE's λ has a true predictive risk within 10 % of the best λ of the scan.

    True risk Σ_c (a_c(λ) − a)ᵀ M_c (a_c(λ) − a) with the known kernel; the template is
    noiseless and the weights are the true inverse variances, so UPRE is unbiased; its
    minimiser scatters by ~0.1–0.2 dex around the optimum where the risk curve is flat
    (observed: within 3 % here), hence 10 %.
    """
    truth, systems, _, _, _ = candidates
    h = regularization_matrix(K)
    choice = choose_common_lambda(systems, h, estimator="upre")
    a_true = truth.ravel()

    def true_risk(lam):
        total = 0.0
        for s in systems:
            e = np.linalg.solve(s.matrix + lam * h, s.vector) - a_true
            total += e @ s.matrix @ e
        return total

    scan = choice.reference * 10.0 ** choice.log_relative[::4]
    best = min(true_risk(v) for v in scan)
    assert not choice.at_scan_edge
    assert true_risk(choice.value) < 1.10 * best


def test_relative_lambda_does_not_depend_on_flux_units(candidates):
    """Template ×100 (science kept): M ×1e4, β ×100: λ ×1e4, λ/λ_ref unchanged."""
    _, systems, _, _, _ = candidates
    h = regularization_matrix(K)
    a = choose_common_lambda(systems, h)
    scaled = [CandidateSystem(s.matrix * 1e4, s.vector * 100.0, s.data_norm, s.n_data)
              for s in systems]
    b = choose_common_lambda(scaled, h)
    assert b.relative == pytest.approx(a.relative, rel=1e-6)
    assert b.value == pytest.approx(1e4 * a.value, rel=1e-6)
    assert reference_lambda(scaled, h) == pytest.approx(1e4 * reference_lambda(systems, h))


@pytest.mark.parametrize("estimator", ["gcv", "evidence"])
def test_other_estimators_choose_a_lambda_inside_the_scan(candidates, estimator):
    _, systems, _, _, _ = candidates
    choice = choose_common_lambda(systems, regularization_matrix(K), estimator=estimator)
    assert not choice.at_scan_edge
    assert 0 < choice.effective_parameters < K * K


def test_bad_inputs_are_named():
    h = regularization_matrix(K)
    with pytest.raises(ConfigError, match="at least one"):
        choose_common_lambda([], h)
    s = CandidateSystem(np.eye(K * K), np.ones(K * K), 1.0, 10)
    with pytest.raises(ConfigError, match="estimator"):
        choose_common_lambda([s], h, estimator="aic")
    with pytest.raises(ConfigError, match="log_span"):
        choose_common_lambda([s], h, log_span=(2.0, -2.0))
