"""Single-candidate fits (docs/fitting.md#candidate-fit) against ip_diffim's expectations.

The expectations are those of ip_diffim's tests/test_kernelCandidateAndSolution.py and
tests/test_buildSingleKernelVisitor.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from psfmatch.basis import alard_lupton_basis, choose_alard_lupton, delta_function_basis
from psfmatch.config import PsfMatchConfig
from psfmatch.convolution import correlate
from psfmatch.fit import CandidateFitError, difference_stamp, fit_candidate


def _gaussian(shape, sx, sy, cx=None, cy=None):
    ny, nx = shape
    cx = (nx - 1) / 2 if cx is None else cx
    cy = (ny - 1) / 2 if cy is None else cy
    y, x = np.mgrid[0:ny, 0:nx].astype(float)
    return np.exp(-((x - cx) ** 2) / (2 * sx**2) - (y - cy) ** 2 / (2 * sy**2))


def test_delta_function_basis_recovers_gaussian_kernel_exactly():
    """ip_diffim testGaussian: DF basis, background fitted, no noise, variance 1e-4."""
    kernel = _gaussian((21, 21), 2.0, 3.0)
    template = np.zeros((71, 71))
    template[35, 35] = 1.0
    science = correlate(template, kernel)
    t, s = template[10:61, 10:61], science[10:61, 10:61]  # the valid 51 x 51 region
    variance = np.full(t.shape, 2e-4)
    sol = fit_candidate(t, s, variance, delta_function_basis(21), fit_background=True)
    assert sol.kernel_sum == pytest.approx(s.sum(), abs=5e-8)
    assert sol.background == pytest.approx(0.0, abs=5e-8)
    np.testing.assert_allclose(sol.kernel / kernel, 1.0, atol=5e-6)


@pytest.mark.parametrize("scale", [1.0, 2.7])
def test_scaled_delta_gives_kernel_sum_and_background(scale):
    """testDeltaFunctionScaled (DF config): science = scale * template + 11.3."""
    rng = np.random.default_rng(3)
    template = rng.normal(100.0, 10.0, size=(43, 43))
    science = scale * template + 11.3
    variance = np.ones_like(template)
    sol = fit_candidate(template, science, variance, delta_function_basis(21), fit_background=True)
    assert sol.kernel_sum == pytest.approx(scale, abs=1e-6)
    assert sol.kernel[10, 10] == pytest.approx(scale, abs=1e-5)
    assert sol.background == pytest.approx(11.3, abs=1e-4)


def test_al_basis_recovers_gaussian_to_gaussian_kernel():
    """A star of sigma 2 matched to sigma 3 needs a Gaussian kernel of sigma sqrt(5)."""
    sigma_t, sigma_s = 2.0, 3.0
    template = 1e4 * _gaussian((43, 43), sigma_t, sigma_t) / (2 * np.pi * sigma_t**2)
    science = 1.3e4 * _gaussian((43, 43), sigma_s, sigma_s) / (2 * np.pi * sigma_s**2)
    choice = choose_alard_lupton(PsfMatchConfig(), target_fwhm=2.3548 * sigma_t,
                                 reference_fwhm=2.3548 * sigma_s)
    basis = alard_lupton_basis(
        half_width=choice.kernel_size // 2, sigmas=choice.sigmas, degrees=choice.degrees
    )
    sol = fit_candidate(template, science, np.ones_like(template), basis, fit_background=False)
    # Sampled Gaussians are only approximately closed under discrete convolution, so the
    # sum is good to ~1e-4 and the image to ~1 % of its peak.
    assert sol.kernel_sum == pytest.approx(1.3, rel=1e-3)
    k = choice.kernel_size
    truth = 1.3 * _gaussian((k, k), np.sqrt(5.0), np.sqrt(5.0))
    truth *= 1.3 / truth.sum()
    assert np.abs(sol.kernel - truth).max() < 0.01 * truth.max()
    diff, var, mask = difference_stamp(
        (template, np.ones_like(template), np.zeros(template.shape, np.int32)),
        (science, np.ones_like(science), np.zeros(science.shape, np.int32)),
        sol.kernel, sol.background,
    )
    assert np.abs(diff).max() < 1e-3 * science.max()


def test_zero_variance_without_constant_weighting_raises():
    t = np.ones((43, 43))
    v = np.ones((43, 43))
    v[21, 21] = 0.0
    with pytest.raises(CandidateFitError, match="variance equals 0"):
        fit_candidate(t, t, v, delta_function_basis(3), fit_background=False,
                      constant_variance_weighting=False)


def test_usable_fit_pixels_leave_out_flagged_science_pixels():
    from psfmatch.fit import usable_fit_pixels

    k, size = 5, 15
    s_mask = np.zeros((size, size), dtype=np.int32)
    s_mask[10, 10] = 8  # CR in the science
    s_mask[11, 11] = 16  # another plane, not excluded
    s_mask[0, 0] = 8  # outside the fit region
    usable = usable_fit_pixels(s_mask, 8, k).reshape(size - k + 1, size - k + 1)
    expected = np.ones_like(usable)
    expected[8, 8] = False  # fit-region pixel (i, j) = stamp pixel (i + 2, j + 2)
    np.testing.assert_array_equal(usable, expected)


def test_a_template_cosmic_ray_near_a_star_no_longer_pulls_the_kernel():
    """A 5000-count cosmic ray 8 px from a bright star in the *template* is convolved
    into the model: kernel sum −18 … −20 % (seeds 4–8). Filled with the stamp's median
    (what the fits do with ``kernel_fit.fit_mask_planes``) the fit equals the fit without
    the cosmic ray (the star's wing there is far below the noise); its own σ is ~0.2 %."""
    from tests.fidelity_helpers import gaussian_kernel, stamp_set

    from psfmatch.candidates import fill_flagged_template
    from psfmatch.fit import usable_fit_pixels

    k = 9
    basis = delta_function_basis(k)
    rng = np.random.default_rng(4)
    template, science = stamp_set(rng, 1, stamp=35, kernel=gaussian_kernel(k, 1.2, scale=1.1),
                                  fluxes=[3e5])
    t_img, s_img = template[0][0].copy(), science[0][0]
    variance = science[1][0] + template[1][0]
    clean = fit_candidate(t_img, s_img, variance, basis, fit_background=True,
                          constant_variance_weighting=False)
    t_img[9, 17:20] += 5000.0
    t_mask = np.zeros(t_img.shape, dtype=np.int32)
    t_mask[9, 17:20] = 8
    used = fit_candidate(t_img, s_img, variance, basis, fit_background=True,
                         constant_variance_weighting=False)
    filled = fill_flagged_template((t_img[None], template[1], t_mask[None]), 8)
    assert filled[0][0][9, 18] == pytest.approx(np.median(t_img))
    fixed = fit_candidate(filled[0][0], s_img, variance, basis, fit_background=True,
                          constant_variance_weighting=False)
    assert used.kernel_sum / 1.1 - 1 < -0.1
    assert fixed.kernel_sum == pytest.approx(clean.kernel_sum, abs=2e-4)
    usable = usable_fit_pixels(np.zeros_like(t_mask), 8, k)
    with pytest.raises(CandidateFitError, match="usable pixels"):
        fit_candidate(t_img, s_img, variance, basis, fit_background=True,
                      constant_variance_weighting=False, usable=np.zeros_like(usable))


def test_noise_scale_is_the_variance_under_the_model_over_the_median():
    """Sky-limited (constant variance): 1. Poisson-limited core: the model-weighted mean
    variance over the stamp's median, computed here by hand."""
    from psfmatch.fit import noise_scale

    k, size = 5, 21
    kernel = np.zeros((k, k))
    kernel[2, 2] = 1.0  # identity: the model is the template itself
    template = 1e4 * _gaussian((size, size), 1.5, 1.5)
    sky = np.full((size, size), 100.0)
    assert noise_scale(template, sky, kernel) == pytest.approx(1.0)
    poisson = sky + template
    model = template[2:-2, 2:-2]
    expected = np.sum(model**2 * poisson[2:-2, 2:-2]) / np.sum(model**2) / np.median(poisson)
    assert noise_scale(template, poisson, kernel) == pytest.approx(expected)
    assert expected > 10  # a bright core: far noisier than the sky the median says
    assert noise_scale(np.zeros((size, size)), poisson, kernel) == 1.0
