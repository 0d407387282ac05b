"""Decorrelation afterburner (DMTN-021) on simulated pairs with the true kernel.

The pairs (tests/modes_sim.py) are 512² with a template as noisy as the science image
(sky 200 ADU, read noise 4 e-, gain 1), template FWHM 3.0 px, science 4.5 px, kernel sum
1.1. Blank sky leaves N ≈ 2e5 pixels, so a lag-1 autocorrelation is measured to
1/√N ≈ 0.0022 and a standard deviation to 1/√(2N) ≈ 0.0016.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import fft
from tests import modes_sim

from psfmatch.decorrelation import decorrelate, node_weights
from psfmatch.exposure import Exposure
from psfmatch.kernel import SpatialKernel
from psfmatch.modes import CONVOLVE_SCIENCE, CONVOLVE_TEMPLATE, difference_convolve_science
from psfmatch.psf import moments_fwhm
from psfmatch.spatial import SpatialFunction
from psfmatch.subtract import convolve_exposure, prepare_template_mask, subtract
from psfmatch.synth import gaussian_psf_image
from psfmatch.whitening import apply_filter, decorrelation_filter

BORDER = 40  # > kernel half-width (15) + filter half-width of interest


@pytest.fixture(scope="module")
def params():
    return modes_sim.params()


@pytest.fixture(scope="module")
def forward(params):
    pair = modes_sim.make(params, swapped=False)
    matched = convolve_exposure(prepare_template_mask(pair.template), pair.kernel)
    return pair, subtract(pair.science, matched, pair.kernel)


@pytest.fixture(scope="module")
def swapped(params):
    pair = modes_sim.make(params, swapped=True)
    difference, _ = difference_convolve_science(pair.science, pair.template, pair.kernel)
    return pair, difference


def _z(exposure: Exposure) -> np.ndarray:
    return exposure.image.astype(np.float64) / np.sqrt(exposure.variance.astype(np.float64))


def _predicted_lag1(kernel: np.ndarray, v: float, vt: float) -> float:
    """ρ₁ of ``n_u − K⋆n_c`` (or its negative): v_t Σ K(d) K(d + e_x) / (v + v_t Σ K²)."""
    return vt * float(np.sum(kernel[:, 1:] * kernel[:, :-1])) / (v + vt * float(np.sum(kernel**2)))


def _gaussian_kernel(sigma: float, size: int = 25, scale: float = 1.1) -> np.ndarray:
    off = np.arange(size) - size // 2
    g = np.exp(-0.5 * (off / sigma) ** 2)
    k = np.outer(g, g)
    return scale * k / k.sum()


# ----------------------------------------------------------------------------- the filter
@pytest.mark.parametrize(("v", "vt"), [(1.0, 1.0), (1.0, 10.0), (4.0, 1.0)])
def test_filter_flattens_the_noise_spectrum_and_keeps_flux(v, vt):
    kernel = _gaussian_kernel(1.8)
    filt = decorrelation_filter(kernel, unconvolved_variance=v, convolved_variance=vt)
    kappa = kernel.sum()
    # phi_hat(0) = 1: a point source keeps its flux
    assert filt.image_filter.sum() == pytest.approx(1.0, abs=1e-9)
    # point symmetric, so correlation and convolution agree
    np.testing.assert_allclose(filt.image_filter, filt.image_filter[::-1, ::-1], atol=1e-12)
    # after filtering, the noise power v |h1_hat|^2 + vt |h2_hat|^2 is flat at v + vt kappa^2
    n = 2 * filt.image_filter.shape[0] + 2
    spectrum = sum(var * np.abs(fft.fft2(h, (n, n))) ** 2 for var, h in
                   ((v, filt.unconvolved_filter), (vt, filt.convolved_filter)))
    np.testing.assert_allclose(spectrum, v + vt * kappa**2, rtol=1e-6)
    assert filt.output_variance == pytest.approx(v + vt * kappa**2, rel=1e-9)


def test_filter_rejects_bad_inputs():
    with pytest.raises(ValueError, match="odd"):
        decorrelation_filter(np.ones((4, 4)), unconvolved_variance=1.0, convolved_variance=1.0)
    with pytest.raises(ValueError, match="variances"):
        decorrelation_filter(np.ones((3, 3)), unconvolved_variance=-1.0, convolved_variance=1.0)
    with pytest.raises(ValueError, match="kernel sum"):
        decorrelation_filter(-np.ones((3, 3)), unconvolved_variance=1.0, convolved_variance=1.0)


def test_node_weights_are_a_partition_of_unity():
    nodes = np.array([10.0, 50.0, 90.0])
    w = node_weights(np.arange(0, 101, dtype=float), nodes)
    np.testing.assert_allclose(w.sum(axis=0), 1.0)
    assert w[1, 50] == 1.0
    assert w[0, 30] == pytest.approx(0.5)
    assert w[0, 0] == 1.0


# ----------------------------------------------------------------------------- whitening
@pytest.mark.parametrize("direction", ["forward", "swapped"])
def test_decorrelation_whitens_blank_sky(request, params, direction):
    pair, difference = request.getfixturevalue(direction)
    mode = CONVOLVE_TEMPLATE if direction == "forward" else CONVOLVE_SCIENCE
    blank = modes_sim.blank_sky(pair, params, border=BORDER) & (difference.mask == 0)
    n = int(blank.sum())
    assert n > 150_000
    noise = 1.0 / math.sqrt(n)

    before = modes_sim.lag1(_z(difference), blank)
    centre = pair.kernel.image_at(*pair.kernel.centre)
    unconv, conv = ((pair.science, pair.template) if mode == CONVOLVE_TEMPLATE
                    else (pair.template, pair.science))
    v_unconv = float(np.mean(unconv.variance[blank]))
    v_conv = float(np.mean(conv.variance[blank]))
    predicted = _predicted_lag1(centre, v_unconv, v_conv)
    # the template noise convolved with the kernel correlates neighbours as predicted
    # (4 sigma of the estimate, plus 10 % of the value for the kernel's spatial variation)
    assert before[0] == pytest.approx(predicted, abs=4 * noise + 0.1 * predicted)
    assert predicted > 10 * noise

    result = decorrelate(difference, science=pair.science, template=pair.template,
                         kernel_at=pair.kernel.image_at, mode=mode)
    z = _z(result.exposure)
    after = modes_sim.lag1(z, blank)
    print(f"{direction}: lag-1 before {before}, after {after} (N = {n})")
    assert max(abs(a) for a in after) <= 0.01  # the bound; ~4.5 sigma of the estimate
    # the new variance plane describes the whitened pixels: std(D/sigma) = 1 within 2 %
    assert np.std(z[blank]) == pytest.approx(1.0, abs=0.02)
    # and equals v + v_t kappa^2 (/ kappa^2 in convolveScience) on blank sky
    assert np.mean(result.exposure.variance[blank]) == pytest.approx(
        result.info["expected_variance"], rel=0.01)
    # the mask is untouched
    np.testing.assert_array_equal(result.exposure.mask, difference.mask)


def test_spatial_grid_matches_single_node_for_constant_kernel_and_whitens(params, forward):
    pair, difference = forward
    constant = pair.kernel.image_at(*pair.kernel.centre)
    one = decorrelate(difference, science=pair.science, template=pair.template,
                      kernel_at=lambda x, y: constant)
    grid = decorrelate(difference, science=pair.science, template=pair.template,
                       kernel_at=lambda x, y: constant, grid=(3, 3))
    # filtering is linear and the tent weights sum to 1: identical up to float32 rounding
    np.testing.assert_allclose(grid.exposure.image, one.exposure.image, rtol=1e-5, atol=1e-3)
    varying = decorrelate(difference, science=pair.science, template=pair.template,
                          kernel_at=pair.kernel.image_at, grid=(3, 3))
    assert len(varying.filters) == 9
    sums = [f.kernel_sum for f in varying.filters]
    assert max(sums) == pytest.approx(min(sums), rel=1e-9)  # the truth kernel sum is constant
    blank = modes_sim.blank_sky(pair, params, border=BORDER) & (difference.mask == 0)
    assert max(abs(a) for a in modes_sim.lag1(_z(varying.exposure), blank)) <= 0.01


def test_complete_variance_propagation_agrees_on_flat_noise(params, forward):
    pair, difference = forward
    kw = {"science": pair.science, "template": pair.template, "kernel_at": pair.kernel.image_at}
    fast = decorrelate(difference, **kw)
    full = decorrelate(difference, complete_variance=True, **kw)
    blank = modes_sim.blank_sky(pair, params, border=BORDER)
    # on blank sky both input planes are flat, where the two estimates coincide
    np.testing.assert_allclose(full.exposure.variance[blank], fast.exposure.variance[blank],
                               rtol=1e-3)


# ----------------------------------------------------------------------------- PSF, flux
def test_decorrelated_psf_is_phi_convolved_with_the_science_psf(forward):
    pair, difference = forward
    psf = gaussian_psf_image(4.5, 41)
    result = decorrelate(difference, science=pair.science, template=pair.template,
                         kernel_at=pair.kernel.image_at, psf_image=psf)
    filt = result.filters[0]
    # independent: phi_hat * P_hat on a large grid, phi_hat from the formula
    n = 256
    kernel = pair.kernel.image_at(*pair.kernel.centre)
    half = kernel.shape[0] // 2
    k_hat = fft.fft2(np.roll(np.pad(kernel, (0, n - kernel.shape[0])), (-half, -half), (0, 1)))
    v, vt = filt.unconvolved_variance, filt.convolved_variance
    phi_hat = np.sqrt((v + vt * kernel.sum() ** 2) / (v + vt * np.abs(k_hat) ** 2))
    p_pad = np.roll(np.pad(psf, (0, n - 41)), (-20, -20), (0, 1))
    expected = np.roll(np.real(fft.ifft2(fft.fft2(p_pad) * phi_hat)), (20, 20), (0, 1))[:41, :41]
    np.testing.assert_allclose(result.psf_image, expected, atol=1e-6 * psf.max())
    assert result.psf_image.sum() == pytest.approx(1.0, abs=1e-9)
    # whitening boosts high frequencies: the difference PSF is sharper than the science PSF
    assert moments_fwhm(result.psf_image) < moments_fwhm(psf)


def test_point_source_flux_is_preserved():
    n = 128
    image = np.zeros((n, n))
    image[40:81, 40:81] = 1000.0 * gaussian_psf_image(4.5, 41)
    ones = np.ones((n, n), dtype=np.float32)
    zero_mask = np.zeros((n, n), dtype=np.int32)
    exp = Exposure(image.astype(np.float32), zero_mask, ones)
    kernel = _gaussian_kernel(1.4, 21)
    fn = SpatialFunction(0, "chebyshev1", (0, 0, n - 1, n - 1))
    sk = SpatialKernel(kernel[None], np.ones((1, 1)), fn)
    out = decorrelate(exp, science=exp, template=exp, kernel_at=sk.image_at).exposure
    assert out.image.sum() == pytest.approx(1000.0, rel=1e-4)


def test_non_finite_pixels_stay_and_do_not_spread(forward):
    pair, difference = forward
    image = difference.image.copy()
    image[200:205, 300:305] = np.nan
    hole = difference.with_(image=image)
    out = decorrelate(hole, science=pair.science, template=pair.template,
                      kernel_at=pair.kernel.image_at).exposure
    assert np.isnan(out.image[200:205, 300:305]).all()
    assert np.isfinite(out.image[190:215, 290:315][~np.isnan(image[190:215, 290:315])]).all()


def test_apply_filter_identity():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(50, 60))
    delta = np.zeros((5, 5))
    delta[2, 2] = 1.0
    np.testing.assert_allclose(apply_filter(data, delta), data, atol=1e-12)


def test_decorrelate_rejects_bad_arguments(forward):
    pair, difference = forward
    kw = {"science": pair.science, "template": pair.template, "kernel_at": pair.kernel.image_at}
    with pytest.raises(ValueError, match="mode"):
        decorrelate(difference, mode="convolveBoth", **kw)
    with pytest.raises(ValueError, match="preconvolution"):
        decorrelate(difference, mode=CONVOLVE_SCIENCE, preconvolution_kernel=np.ones((3, 3)), **kw)
    small = pair.science.with_(image=pair.science.image[:-1], mask=pair.science.mask[:-1],
                               variance=pair.science.variance[:-1])
    with pytest.raises(ValueError, match="science"):
        decorrelate(difference, science=small, template=pair.template,
                    kernel_at=pair.kernel.image_at)
