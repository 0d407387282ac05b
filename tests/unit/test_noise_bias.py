"""The template-noise term of the normal matrix (noise_bias)."""

from __future__ import annotations

import numpy as np

from psfmatch.basis import alard_lupton_basis, delta_function_basis
from psfmatch.fit import design_matrix
from psfmatch.noise_bias import template_noise_matrix
from psfmatch.synth import gaussian_psf_image


def _monte_carlo(basis, n_draws=400, seed=2):
    rng = np.random.default_rng(seed)
    k = basis.shape[-1]
    stamp = 3 * k
    t0 = 5000.0 * gaussian_psf_image(3.0, stamp)
    var_t = 50.0 + 0.5 * t0  # non-uniform: a star's Poisson noise
    w = 1.0 / (100.0 + t0[k // 2: stamp - k // 2, k // 2: stamp - k // 2])
    c0 = design_matrix(t0, basis)
    m0 = c0.T @ (c0 * w.ravel()[:, None])
    excess = np.zeros_like(m0)
    for _ in range(n_draws):
        noise = rng.normal(0.0, np.sqrt(var_t))
        for sign in (1.0, -1.0):  # antithetic pair: the signal × noise terms cancel
            c = design_matrix(t0 + sign * noise, basis)
            excess += c.T @ (c * w.ravel()[:, None]) - m0
    return excess / (2 * n_draws), template_noise_matrix(var_t, w, basis, fit_background=False)


def test_delta_function_noise_matrix_is_the_expected_excess():
    """E[CᵀWC] − C₀ᵀWC₀ = N: diagonal within Monte-Carlo error, off-diagonal ~0.

    With antithetic draws only the noise × noise term is left: a diagonal element is a
    weighted sum of ~121 squared Gaussians, relative scatter ~sqrt(2/121) = 13 % per
    draw, 0.64 % over 400 draws: 5σ = 3.2 %. An off-diagonal element scatters by
    ~sqrt(1/121) = 9 % of N_ii per draw, 0.45 % over 400: 5σ = 2.3 %.
    """
    mc, n = _monte_carlo(delta_function_basis(5))
    np.testing.assert_allclose(np.diag(mc), np.diag(n), rtol=0.032)
    off = mc - np.diag(np.diag(mc))
    assert np.abs(off).max() < 0.023 * np.diag(n).min()
    assert np.count_nonzero(n - np.diag(np.diag(n))) == 0


def test_alard_lupton_noise_matrix_matches_monte_carlo():
    basis = alard_lupton_basis(half_width=3, sigmas=(0.7, 1.5), degrees=(2, 1))
    mc, n = _monte_carlo(basis)
    scale = np.abs(n).max()
    # antithetic draws, as above: ≲ 0.7 % of the largest element per element (1σ); 5σ
    np.testing.assert_allclose(mc, n, atol=0.035 * scale)


def test_background_row_and_column_are_zero():
    n = template_noise_matrix(np.ones((15, 15)), np.ones((11, 11)), delta_function_basis(5),
                              fit_background=True)
    assert n.shape == (26, 26)
    assert not n[-1].any()
    assert not n[:, -1].any()
