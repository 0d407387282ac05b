"""Point-source depth: noise-equivalent area, 5σ limiting flux and magnitudes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from psfmatch.depth import (
    combined_limiting_magnitude,
    depth,
    ipdiffim_limiting_magnitude,
    limiting_flux,
    limiting_magnitude,
    moments_area,
    noise_equivalent_area,
)
from psfmatch.exposure import Exposure
from psfmatch.synth import gaussian_psf_image, render_gaussians

SIGMA_TO_FWHM = 2.354820045


def test_noise_equivalent_area_of_a_gaussian():
    psf = gaussian_psf_image(4.0, 51)
    # pixel-integrated Gaussian: 4 pi (sigma^2 + 1/12) to first order in the pixel box
    sigma2 = (4.0 / SIGMA_TO_FWHM) ** 2 + 1.0 / 12.0
    assert noise_equivalent_area(psf) == pytest.approx(4 * math.pi * sigma2, rel=0.01)
    # ip_diffim's area is pi sqrt(Ixx Iyy) = a quarter of that
    assert moments_area(psf) == pytest.approx(math.pi * sigma2, rel=0.01)


def test_limiting_flux_is_the_5_sigma_psf_flux_error():
    """Sources at the 5σ limit measured by PSF fitting come out at S/N 5."""
    rng = np.random.default_rng(21)
    psf = gaussian_psf_image(4.0, 31)
    sigma = 5.0
    f_lim = limiting_flux(psf, sigma**2)
    n = 400
    stamps = rng.normal(0.0, sigma, (n, 31, 31)) + f_lim * psf
    # PSF-fit flux with known position, white noise: sum(P d) / sum(P^2)
    flux = np.einsum("ij,nij->n", psf, stamps) / np.sum(psf**2)
    # error of the mean S/N: 1/sqrt(400) = 0.05; the scatter is the PSF-flux error
    assert np.mean(flux) / np.std(flux) == pytest.approx(5.0, abs=0.3)
    assert np.std(flux) == pytest.approx(f_lim / 5.0, rel=0.1)  # 3.5 % std error for n=400


def test_magnitudes():
    psf = gaussian_psf_image(4.0, 31)
    assert limiting_magnitude(100.0, 30.0) == pytest.approx(25.0)
    assert math.isnan(limiting_magnitude(100.0, None))
    assert math.isnan(limiting_magnitude(0.0, 30.0))
    # equal limits combine to sqrt(2) more flux: 0.376 mag brighter
    assert combined_limiting_magnitude(25.0, 25.0) == pytest.approx(25.0 - 1.25 * math.log10(2.0))
    assert combined_limiting_magnitude(25.0, float("nan")) == 25.0
    expected = 30.0 - 2.5 * math.log10(5.0 * math.sqrt(moments_area(psf)))
    assert ipdiffim_limiting_magnitude(psf, 30.0) == pytest.approx(expected)
    assert math.isnan(ipdiffim_limiting_magnitude(psf, None))


def test_depth_record_of_an_exposure():
    n = 128
    psf = gaussian_psf_image(3.0, 25)
    image = np.zeros((n, n))
    render_gaussians(image, 64.0, 64.0, 1.0e4, 3.0 / SIGMA_TO_FWHM)
    var = np.full((n, n), 16.0, np.float32)
    mask = np.zeros((n, n), np.int32)
    mask[:, :10] = 1 << 0  # BAD, with garbage variance: ignored
    var[:, :10] = 1.0e6
    record = depth(Exposure(image.astype(np.float32), mask, var), psf, zero_point=28.0)
    assert record["mean_variance"] == pytest.approx(16.0)
    assert record["limiting_flux"] == pytest.approx(5 * 4.0 * math.sqrt(noise_equivalent_area(psf)))
    expected = 28.0 - 2.5 * math.log10(record["limiting_flux"])
    assert record["limiting_magnitude"] == pytest.approx(expected)
    no_zero_point = depth(Exposure(image.astype(np.float32), mask, var), psf)
    assert math.isnan(no_zero_point["limiting_magnitude"])
