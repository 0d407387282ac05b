"""PSF models: analytic profiles, PSFEx evaluation conventions, PSF files."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits
from tests.conftest import REAL_DATA

from psfmatch import io
from psfmatch.basis import SIGMA_TO_FWHM
from psfmatch.errors import ExposureError, InputFileError
from psfmatch.exposure import Exposure
from psfmatch.io.psfs import read_psf_model, write_psf_image
from psfmatch.psf import (
    DoubleGaussianPsf,
    GaussianPsf,
    ImagePsf,
    MoffatPsf,
    PsfexPsf,
    adaptive_fwhm,
    analytic_psf,
    embed_centred,
)

PSFEX_FILES = ["DECam_00154912_12_psfcat.psf", "DECam_00241238_01_psfcat.psf"]


def _centroid(image):
    y, x = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    return float((image * x).sum() / image.sum()), float((image * y).sum() / image.sum())


@pytest.mark.parametrize(
    "model",
    [GaussianPsf(4.0), MoffatPsf(4.0, 2.5), DoubleGaussianPsf(2.0, 4.0, 0.1, size=31)],
)
def test_analytic_models_are_unit_sum_centred_and_odd(model):
    img = model.image_at(123.0, 45.0)
    assert img.shape[0] % 2 == 1
    assert img.sum() == pytest.approx(1.0, abs=1e-12)
    c = img.shape[0] // 2
    assert _centroid(img) == pytest.approx((c, c), abs=1e-10)
    assert np.unravel_index(img.argmax(), img.shape) == (c, c)


def test_gaussian_width_and_resizing():
    g = GaussianPsf(2.5 * SIGMA_TO_FWHM)
    # point-sampled Gaussian with sigma >= 1: adaptive moments recover sigma to ~1e-6
    assert adaptive_fwhm(g.image) == pytest.approx(g.fwhm, rel=1e-5)
    big = g.resized(41)
    assert big.image.shape == (41, 41)
    # resizing keeps the profile: the ratio of two pixels is unchanged
    c, cb = g.size // 2, 20
    assert big.image[cb, cb + 3] / big.image[cb, cb] == pytest.approx(
        g.image[c, c + 3] / g.image[c, c], rel=1e-12
    )


def test_moffat_half_maximum_at_half_fwhm():
    m = MoffatPsf(5.0, 3.0)
    peak = m._profile(np.zeros(1))[0]
    assert m._profile(np.array([2.5**2]))[0] == pytest.approx(0.5 * peak, rel=1e-12)


def test_double_gaussian_follows_meas_algorithms():
    single = DoubleGaussianPsf(2.0, size=11)
    np.testing.assert_allclose(single.image, GaussianPsf(2.0 * SIGMA_TO_FWHM, size=11).image,
                               rtol=1e-12)
    double = DoubleGaussianPsf(1.5, 4.0, 0.2, size=41)
    c = 20
    # b is the ratio of the peak heights of the two (unnormalised) Gaussians
    expected = (1.0 + 0.2) / (math.exp(-1 / (2 * 1.5**2)) + 0.2 * math.exp(-1 / (2 * 4.0**2)))
    assert double.image[c, c] / double.image[c, c + 1] == pytest.approx(expected, rel=1e-12)
    peak = double._profile(np.zeros(1))[0]
    assert double._profile(np.array([(double.fwhm / 2) ** 2]))[0] == pytest.approx(0.5 * peak, rel=1e-9)


def test_analytic_psf_from_config_and_errors():
    assert analytic_psf({"model": "moffat", "fwhm": 4.0, "beta": 2.5}).alpha > 0
    assert analytic_psf({"model": "double_gaussian", "fwhm": 4.0}).sigma1 == pytest.approx(
        4.0 / SIGMA_TO_FWHM)
    with pytest.raises(ExposureError, match="beta must be > 1"):
        MoffatPsf(4.0, 1.0)
    with pytest.raises(ExposureError, match="odd"):
        GaussianPsf(4.0).resized(20)


def test_embed_centred_keeps_centre_and_refuses_larger():
    img = GaussianPsf(3.0, size=11).image
    out = embed_centred(img, 15)
    assert out[7, 7] == img[5, 5]
    assert out.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="cannot be embedded"):
        embed_centred(img, 9)


# ---------------------------------------------------------------------- PSFEx
def _gauss_samples(n, sigma_samples):
    c = n // 2
    y, x = np.mgrid[0:n, 0:n] - c
    return np.exp(-(x * x + y * y) / (2 * sigma_samples**2))


def test_psfex_polynomial_order_and_coordinates():
    comps = np.zeros((6, 9, 9))
    model = PsfexPsf(components=comps + 1e-3, degree=2, zero=(101.0, 51.0), scale=(10.0, 20.0),
                     sampling=1.0)
    # parent (x, y) -> 1-based X = x + 1; terms 1, X, X^2, Y, XY, Y^2
    xs, ys = (150.0 + 1 - 101.0) / 10.0, (70.0 + 1 - 51.0) / 20.0
    np.testing.assert_allclose(model.terms(150.0, 70.0), [1, xs, xs**2, ys, xs * ys, ys**2])
    assert model.centre == (100.0, 50.0)


def test_psfex_oversampled_model_gives_the_pixel_psf_and_its_spatial_variation():
    """Samples every 0.5 px: a Gaussian of 2 samples sigma is 1 px... scaled by PSF_SAMP."""
    samp, n = 0.5, 61
    sigma_a, sigma_b = 1.6, 2.2  # pixels
    g_a = _gauss_samples(n, sigma_a / samp)
    g_b = _gauss_samples(n, sigma_b / samp)
    g_a, g_b = g_a / g_a.sum(), g_b / g_b.sum()
    comps = np.zeros((3, n, n))
    comps[0] = g_a
    comps[1] = g_b - g_a  # PSF = G_a at X^ = 0, G_b at X^ = 1
    model = PsfexPsf(components=comps, degree=1, zero=(1001.0, 1001.0), scale=(500.0, 500.0),
                     sampling=samp)
    assert model.size == 2 * math.floor((n // 2) * samp) + 1
    for sigma, x in ((sigma_a, 1000.0), (sigma_b, 1500.0)):
        img = model.image_at(x, 1000.0)
        truth = GaussianPsf(sigma * SIGMA_TO_FWHM, size=model.size).image
        # even output pixels fall on samples; Lanczos-3 on a 3.2-sample-sigma Gaussian is
        # exact to ~1e-4 of the peak at the odd ones
        assert np.abs(img - truth).max() < 1e-3 * truth.max()


@pytest.mark.realdata
@pytest.mark.parametrize("name", PSFEX_FILES)
def test_real_psfex_models_agree_with_their_own_header(name):
    path = REAL_DATA / "psfex_models" / name
    if not path.is_file():
        pytest.skip(f"{path} not available")
    from photutils.aperture import CircularAperture, aperture_photometry

    model = read_psf_model(path)
    assert isinstance(model, PsfexPsf)
    img = model.image_at(*model.centre)
    c = img.shape[0] // 2
    assert img.sum() == pytest.approx(1.0)
    # PSFEx recentres its models: centroid within 0.15 px of the central pixel
    assert _centroid(img) == pytest.approx((c, c), abs=0.15)
    # PSF_FWHM is twice the stars' half-light radius (SExtractor FLUX_RADIUS); the model's
    # own 2*r50 agrees within 10 % (4.76 vs 4.59 and 5.15 vs 4.83 px). Reading PSF_SAMP
    # the wrong way round would be off by a factor of 2 for the 0.5-sampled model.
    radii = np.linspace(0.5, c, 300)
    flux = [aperture_photometry(img, CircularAperture((c, c), r), method="exact")["aperture_sum"][0]
            for r in radii]
    r50 = float(np.interp(0.5, flux, radii))
    assert 2 * r50 == pytest.approx(model.file_fwhm, rel=0.10)


@pytest.mark.realdata
def test_legacy_survey_merged_psfex_table_reads():
    folder = REAL_DATA / "decam_legacysurvey_cp_cutouts" / "testcase6" / "psfex"
    files = sorted(folder.glob("*-psfex.fits")) if folder.is_dir() else []
    if not files:
        pytest.skip(f"{folder} not available")
    model = read_psf_model(files[0])
    assert model.components.shape == (6, 63, 63)
    assert model.size == 63
    assert model.image_at(50.0, 50.0).sum() == pytest.approx(1.0)


# ---------------------------------------------------------------------- files
def test_psf_image_files_round_trip_and_errors(tmp_path):
    img = MoffatPsf(4.0, 3.0, size=25).image
    path = write_psf_image(tmp_path / "psf.fits", img, metadata={"PSFMODEL": "moffat"})
    model = read_psf_model(path)
    assert isinstance(model, ImagePsf)
    np.testing.assert_allclose(model.image, img)
    # an afw exposure with a PSF HDU is a PSF model file too
    exp = Exposure(image=np.zeros((20, 20), np.float32), mask=np.zeros((20, 20), np.int32),
                   variance=np.ones((20, 20), np.float32), psf=ImagePsf(img))
    io.write_exposure(tmp_path / "exp.fits", exp)
    np.testing.assert_allclose(read_psf_model(tmp_path / "exp.fits").image, img)
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=[1.0])])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(tmp_path / "table.fits")
    with pytest.raises(InputFileError, match=r"table\.fits holds neither a PSFEx table"):
        read_psf_model(tmp_path / "table.fits")
    with pytest.raises(InputFileError, match="missing.fits does not exist"):
        read_psf_model(tmp_path / "missing.fits")
