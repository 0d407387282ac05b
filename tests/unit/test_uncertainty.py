"""Kernel and background uncertainties from the spatial fit (calculateKernelUncertainty)."""

from __future__ import annotations

import numpy as np
import pytest

from psfmatch import io
from psfmatch.basis import alard_lupton_basis
from psfmatch.candidates import FitOptions, ResidualLimits, fit_single_kernels
from psfmatch.kernel import SpatialKernel
from psfmatch.spatial import SpatialFunction, fit_spatial

BBOX = (0, 0, 255, 255)
HALF = 5
STAMP = 4 * HALF + 3  # 23 px: valid region 13 × 13
SIGMA_NOISE = 4.0
N_REALISATIONS = 200


def _truth():
    """A spatial kernel inside the AL span (so the fit is unbiased) plus a background."""
    basis = alard_lupton_basis(half_width=HALF, sigmas=(1.0, 2.0), degrees=(2, 0))
    kf = SpatialFunction(1, "chebyshev1", BBOX)
    coeffs = np.zeros((basis.shape[0], kf.n_terms))
    coeffs[0, 0] = 1.1
    coeffs[1:, :] = np.array([[0.02, 0.01, -0.01], [0.01, 0.0, 0.02], [-0.03, 0.01, 0.0],
                              [0.02, -0.01, 0.01], [0.0, 0.02, 0.01], [0.2, 0.05, -0.04]])
    bf = SpatialFunction(1, "chebyshev1", BBOX)
    return SpatialKernel(basis=basis, coefficients=coeffs, kernel_function=kf,
                         background_coefficients=np.array([3.0, 1.0, -0.5]),
                         background_function=bf)


def _stamps(truth, rng):
    """Noiseless template stamps (two stars each) and the science model at 16 centres."""
    centres = [(x, y) for x in (30.0, 100.0, 160.0, 225.0) for y in (30.0, 95.0, 165.0, 225.0)]
    yy, xx = np.mgrid[0:STAMP, 0:STAMP].astype(float)
    templates, models = [], []
    for cx, cy in centres:
        t = np.zeros((STAMP, STAMP))
        for dx, dy, flux in ((0.0, 0.0, 4.0e3), (*rng.uniform(-3, 3, 2), 1.5e3)):
            c = (STAMP - 1) / 2
            t += flux * np.exp(-((xx - c - dx) ** 2 + (yy - c - dy) ** 2) / (2 * 1.4**2)) / (
                2 * np.pi * 1.4**2)
        kern = truth.image_at(cx, cy)
        model = np.zeros_like(t)
        k = kern.shape[0]
        win = np.lib.stride_tricks.sliding_window_view(t, (k, k))
        model[HALF:-HALF, HALF:-HALF] = np.einsum("yxij,ij->yx", win, kern)
        model[HALF:-HALF, HALF:-HALF] += float(truth.background_at(cx, cy))
        templates.append(t)
        models.append(model)
    return centres, np.array(templates), np.array(models)


def _fit(truth, centres, templates, science):
    n = len(centres)
    zeros = np.zeros(templates.shape, dtype=np.int32)
    # template stamps noiseless (variance 0), science variance σ² → exact weights 1/σ²
    t_stamps = (templates, np.zeros_like(templates), zeros)
    s_stamps = (science, np.full(science.shape, SIGMA_NOISE**2), zeros)
    options = FitOptions(
        fit_background=True, constant_variance_weighting=True, iterate_single_kernel=False,
        check_condition_number=False, max_condition_number=1e99,
        condition_number_type="EIGENVALUE",
        residuals=ResidualLimits(clipping=False, mean_max=1.0, std_max=10.0, bad_bits=0,
                                 core_radius=None),
    )
    fits = fit_single_kernels(t_stamps, s_stamps, truth.basis, options, progress_every=0)
    assert fits.good.all()
    assert n == len(fits.good)
    fit = fit_spatial(centres, fits.normal_matrix, fits.normal_vector,
                      n_basis=truth.basis.shape[0], kernel_function=truth.kernel_function,
                      background_function=truth.background_function, constant_first_term=True,
                      compute_covariance=True)
    return SpatialKernel(basis=truth.basis, coefficients=fit.kernel_coefficients,
                         kernel_function=truth.kernel_function,
                         background_coefficients=fit.background_coefficients,
                         background_function=truth.background_function,
                         covariance=fit.covariance)


@pytest.mark.slow
def test_one_sigma_band_covers_68_percent_over_200_realisations():
    """Coverage of the 1σ band of kernel pixels, kernel sum and background.

    200 noise realisations of one set of 16 candidates (science noise σ = 4, template
    noiseless, so the weights are the exact inverse variances; the truth is inside the
    basis' span, so the estimate is unbiased). In each realisation the kernel image and
    sum are evaluated at three positions and the background at nine; the fraction of
    ``|estimate − truth| ≤ σ`` pooled over realisations must be 0.683 within ±10 %
    (relative, ±0.068). The kernel sum is the same everywhere (constant first term),
    so it has 200 independent samples: binomial standard error 0.033, and ±0.068 is
    about 2 of them; the pooled pixel and background fractions have more samples
    (partly correlated) and smaller errors. (With 600 realisations and other seeds the
    kernel-sum and background z² average 1.03-1.10 and the coverage 0.64-0.68.)
    """
    rng = np.random.default_rng(2024)
    truth = _truth()
    centres, templates, models = _stamps(truth, rng)
    where = [(40.0, 40.0), (128.0, 128.0), (220.0, 200.0)]
    bg_where = [(x, y) for x in (20.0, 128.0, 240.0) for y in (20.0, 128.0, 240.0)]
    pix_z, sum_z, bg_z = [], [], []
    for _ in range(N_REALISATIONS):
        science = models + rng.normal(0.0, SIGMA_NOISE, models.shape)
        fitted = _fit(truth, centres, templates, science)
        for x, y in where:
            sigma = np.sqrt(fitted.image_variance_at(x, y))
            pix_z.append(((fitted.image_at(x, y) - truth.image_at(x, y)) / sigma).ravel())
            sum_z.append((fitted.sum_at(x, y) - truth.sum_at(x, y))
                         / np.sqrt(fitted.sum_variance_at(x, y)))
        for x, y in bg_where:
            bg_z.append((fitted.background_at(x, y) - truth.background_at(x, y))
                        / np.sqrt(fitted.background_variance_at(x, y)))
    target = 0.6827
    pix = np.mean(np.abs(np.concatenate(pix_z)) <= 1.0)
    ksum = np.mean(np.abs(sum_z) <= 1.0)
    bg = np.mean(np.abs(bg_z) <= 1.0)
    assert abs(pix - target) < 0.1 * target, pix
    assert abs(ksum - target) < 0.1 * target, ksum
    assert abs(bg - target) < 0.1 * target, bg


def test_covariance_layout_round_trip_and_errors(tmp_path):
    truth = _truth()
    rng = np.random.default_rng(1)
    centres, templates, models = _stamps(truth, rng)
    fitted = _fit(truth, centres, templates, models + rng.normal(0, SIGMA_NOISE, models.shape))
    n_par = truth.coefficients.size + 3
    assert fitted.covariance.shape == (n_par, n_par)
    np.testing.assert_allclose(fitted.covariance, fitted.covariance.T)
    # basis 0 has one constant coefficient: its other spatial terms have zero variance
    assert fitted.covariance[0, 0] > 0
    assert not fitted.covariance[1:3].any()
    assert not fitted.covariance[:, 1:3].any()
    # the kernel sum of the AL basis is coefficient 0, so its variance is that entry
    assert fitted.sum_variance_at(10.0, 200.0) == pytest.approx(fitted.covariance[0, 0], rel=1e-9)
    io.write_kernel(tmp_path / "k.fits", fitted)
    again = io.read_kernel(tmp_path / "k.fits")
    np.testing.assert_array_equal(again.covariance, fitted.covariance)
    np.testing.assert_allclose(again.image_variance_at(50, 60), fitted.image_variance_at(50, 60))
    assert np.shape(again.background_variance_at(np.arange(3.0), 5.0)) == (3,)
    with pytest.raises(ValueError, match="calculateKernelUncertainty"):
        truth.image_variance_at(0, 0)
    io.write_kernel(tmp_path / "plain.fits", truth)
    assert io.read_kernel(tmp_path / "plain.fits").covariance is None
