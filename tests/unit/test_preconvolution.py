"""Preconvolution score image: score / sqrt(variance) is the detection S/N.

A 512² pair of pure-noise images (science and template both σ = 5 ADU per pixel, white)
with point sources injected in the science image at pixel centres on a 34-px grid:
science PSF FWHM 4 px, template PSF FWHM 3 px. The truth kernel matches the template to
the preconvolved science image (Gaussian of σ² = 2σ_S² − σ_T²). The expected S/N of a
source of flux f is the optimal (Fisher) S/N of the raw score P⋆S − K⋆T,

    ν = f · sqrt(mean_k |P̂|⁴ / (v |P̂|² + v_t |K̂|²)),

computed here independently with numpy FFTs on a 256² grid.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from psfmatch.basis import SIGMA_TO_FWHM
from psfmatch.exposure import Exposure
from psfmatch.kernel import SpatialKernel
from psfmatch.preconvolution import (
    fill_bad_pixels,
    inner_bbox,
    matched_filter,
    preconvolve,
    score_image,
    significance,
)
from psfmatch.spatial import SpatialFunction
from psfmatch.subtract import convolve_exposure, subtract
from psfmatch.synth import gaussian_psf_image, render_gaussians

N = 512
FWHM_S, FWHM_T = 4.0, 3.0
VAR = 25.0  # both images
LEVELS = [5.0] * 81 + [10.0] * 40 + [20.0] * 25 + [35.0] * 25 + [50.0] * 25


def _pad(a: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, n))
    idx = (np.arange(a.shape[0]) - a.shape[0] // 2) % n
    out[np.ix_(idx, idx)] = a
    return out


@pytest.fixture(scope="module")
def setup():
    sig_s, sig_t = FWHM_S / SIGMA_TO_FWHM, FWHM_T / SIGMA_TO_FWHM
    psf = gaussian_psf_image(FWHM_S, 31)
    k_pre = gaussian_psf_image(SIGMA_TO_FWHM * math.sqrt(2 * sig_s**2 - sig_t**2), 31)
    p_hat, k_hat = np.fft.fft2(_pad(psf, 256)), np.fft.fft2(_pad(k_pre, 256))
    snr_per_flux = math.sqrt(np.mean(np.abs(p_hat) ** 4 / (VAR * np.abs(p_hat) ** 2
                                                           + VAR * np.abs(k_hat) ** 2)))
    grid = np.arange(22, N - 22, 34)
    xx, yy = (a.ravel() for a in np.meshgrid(grid, grid))
    rng = np.random.default_rng(11)
    levels = rng.permutation(np.array(LEVELS))
    assert levels.size == xx.size
    flux = levels / snr_per_flux
    signal = np.zeros((N, N))
    render_gaussians(signal, xx, yy, flux, sig_s)
    fn = SpatialFunction(0, "chebyshev1", (0, 0, N - 1, N - 1))
    kernel = SpatialKernel(k_pre[None], np.ones((1, 1)), fn)
    return {"psf": psf, "kernel": kernel, "xx": xx, "yy": yy, "levels": levels, "flux": flux,
            "signal": signal, "rng": rng}


def _exposure(image: np.ndarray) -> Exposure:
    return Exposure(image.astype(np.float32), np.zeros((N, N), np.int32),
                    np.full((N, N), VAR, np.float32))


def _score(setup, science_image, template_image):
    science, template = _exposure(science_image), _exposure(template_image)
    pre, _ = preconvolve(science, setup["psf"])
    matched = convolve_exposure(template, setup["kernel"])
    raw = subtract(pre, matched, setup["kernel"])
    return score_image(raw, science=science, template=template,
                       kernel_at=setup["kernel"].image_at, psf_image=setup["psf"])


def test_score_is_the_snr_of_injected_sources(setup):
    rng = setup["rng"]
    science = setup["signal"] + rng.normal(0.0, math.sqrt(VAR), (N, N))
    template = rng.normal(0.0, math.sqrt(VAR), (N, N))
    nu = significance(_score(setup, science, template).exposure)
    measured = nu[setup["yy"], setup["xx"]]
    for level in np.unique(setup["levels"]):
        sel = setup["levels"] == level
        ratio = measured[sel].mean() / level
        # each value scatters by 1 (S/N units): the mean ratio by 1/(level sqrt(n)),
        # 0.022 at S/N 5 (81 sources); 10 % is > 4.5 of those
        print(f"S/N {level:4.0f}: score/S/N = {ratio:.4f} over {sel.sum()} sources")
        assert ratio == pytest.approx(1.0, abs=0.10)


def test_score_signal_calibration_without_noise(setup):
    nu = significance(_score(setup, setup["signal"], np.zeros((N, N))).exposure)
    ratio = nu[setup["yy"], setup["xx"]] / setup["levels"]
    # noiseless: only the filter truncation and the |P̂|² floor remain
    np.testing.assert_allclose(ratio, 1.0, atol=0.005)


def test_score_noise_is_unit_variance(setup):
    rng = np.random.default_rng(12)
    score = _score(setup, rng.normal(0.0, 5.0, (N, N)), rng.normal(0.0, 5.0, (N, N))).exposure
    nu = significance(score)
    inner = nu[40:-40, 40:-40]
    # the score is smooth (correlation area ~150 px), so ~1500 independent values:
    # std known to 1/sqrt(2 * 1500) ≈ 1.8 %; 6 % is 3.3 of those
    assert np.std(inner) == pytest.approx(1.0, abs=0.06)
    assert np.mean(inner) == pytest.approx(0.0, abs=0.1)


def test_score_marks_the_outer_border_edge(setup):
    result = _score(setup, setup["signal"], np.zeros((N, N)))
    exp = result.exposure
    edge = exp.plane("EDGE")
    x0, y0, x1, y1 = inner_bbox(exp.bbox, 31)
    assert result.info["inner_bbox"] == [x0, y0, x1, y1] == [15, 15, N - 16, N - 16]
    assert edge[:15].all()
    assert edge[:, -15:].all()
    assert not edge[15:-15, 15:-15].any()


def test_matched_filter_of_a_white_difference(setup):
    rng = np.random.default_rng(13)
    psf = setup["psf"]
    # white difference, sigma 5: optimal S/N = f sqrt(sum P^2) / sigma
    flux = setup["levels"] * 5.0 / math.sqrt(np.sum(psf**2))
    signal = np.zeros((N, N))
    render_gaussians(signal, setup["xx"], setup["yy"], flux, FWHM_S / SIGMA_TO_FWHM)
    nu = significance(matched_filter(_exposure(signal + rng.normal(0, 5.0, (N, N))), psf))
    ratio = nu[setup["yy"], setup["xx"]] / setup["levels"]
    for level in (5.0, 50.0):
        sel = setup["levels"] == level
        assert ratio[sel].mean() == pytest.approx(1.0, abs=0.10)


def test_preconvolve_fills_bad_pixels_dilates_masks_and_copies_edges(setup):
    image = np.zeros((64, 64), np.float32)
    mask = np.zeros((64, 64), np.int32)
    image[30, 30] = 1.0e6
    mask[30, 30] = 1 << 0  # BAD
    exp = Exposure(image, mask, np.ones((64, 64), np.float32))
    filled, n = fill_bad_pixels(exp)
    assert n == 1
    assert filled.image[30, 30] == 0.0
    psf = gaussian_psf_image(3.0, 9)
    out, n_filled = preconvolve(exp, psf)
    assert n_filled == 1
    # the bad value did not spread; BAD dilated by 4 px; 4-px border EDGE
    assert np.abs(out.image[10:-10, 10:-10]).max() == 0.0
    assert out.plane("BAD")[26:35, 26:35].all()
    assert out.plane("BAD").sum() == 81
    assert out.plane("EDGE")[:4].all()
    assert not out.plane("EDGE")[4:-4, 4:-4].any()
    # variance: P² ⋆ V = sum P² for unit variance
    assert out.variance[32, 20] == pytest.approx(np.sum(psf**2), rel=1e-5)


def test_preconvolution_kernel_must_be_odd():
    exp = _exposure(np.zeros((N, N)))
    with pytest.raises(ValueError, match="odd"):
        preconvolve(exp, np.ones((4, 4)))
