"""DIA building blocks: options, PSF helpers, flags table, cut-outs, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from psfmatch.basis import SIGMA_TO_FWHM
from psfmatch.config.dia import FLAGGABLE_PLANES
from psfmatch.dia import (
    FLAG_BITS,
    FLAG_DESCRIPTIONS,
    DiaOptions,
    decode_flags,
    detect_and_measure,
    empirical_psf,
    gaussian_psf_image,
    make_cutouts,
    psf_image,
)
from psfmatch.dia.flags import flag_value
from psfmatch.dia.psf import psf_moments_fwhm, shifted_psf
from psfmatch.errors import ConfigError, ExposureError, PsfModelError
from psfmatch.exposure import Exposure
from psfmatch.psf import GaussianPsf
from psfmatch.synth import SimulationParams, make_pair
from psfmatch.synth import gaussian_psf_image as synth_gaussian


# ----------------------------------------------------------------------------- options
def test_options_defaults_and_round_trip():
    opts = DiaOptions()
    assert opts.threshold == 5.0
    assert opts.polarity == "both"
    assert opts.cutout_size == 63
    assert "SAT_TEMPLATE" in opts.flag_planes
    assert "CR" in opts.reject_planes
    again = DiaOptions.from_dict(opts.to_dict())
    assert again == opts
    assert isinstance(opts.to_dict()["flag_planes"], list)


@pytest.mark.parametrize(("field", "value"), [
    ("threshold", 0.0), ("threshold", float("nan")), ("polarity", "up"),
    ("min_footprint_area", 0), ("grow", -1), ("grow", 1.5), ("cutout_size", 64),
    ("min_psf_coverage", 0.0), ("dipole_min_flux_ratio", 1.5), ("streak_min_elongation", 0.5),
    ("flag_planes", ("SAT", "NOPE")), ("flag_planes", "SAT"), ("max_detected_fraction", 2.0),
    ("max_footprint_ratio", -0.1), ("rescale_noise", "yes"), ("max_centroid_shift", 0.0),
])
def test_options_reject_bad_values(field, value):
    with pytest.raises(ConfigError, match=field):
        DiaOptions(**{field: value})


def test_options_unknown_key():
    with pytest.raises(ConfigError, match="thresh"):
        DiaOptions.from_dict({"thresh": 5})


# ----------------------------------------------------------------------------- PSFs
def test_gaussian_psf_image():
    psf = gaussian_psf_image(4.5)
    assert psf.shape == (17, 17)
    assert psf.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(psf, psf[::-1, ::-1])
    # pixel integration adds the box variance 1/12 px^2 to sigma^2
    sigma = 4.5 / SIGMA_TO_FWHM
    assert psf_moments_fwhm(psf) == pytest.approx(SIGMA_TO_FWHM * math.sqrt(sigma**2 + 1 / 12),
                                                  rel=2e-3)
    np.testing.assert_allclose(gaussian_psf_image(4.5, size=17), synth_gaussian(4.5, 17),
                               atol=1e-12)
    for bad in ({"fwhm": 0.0}, {"fwhm": math.inf}, {"fwhm": 3.0, "size": 10}):
        with pytest.raises(PsfModelError):
            gaussian_psf_image(**bad)


def test_psf_image_validates_and_evaluates_models():
    np.testing.assert_allclose(psf_image(2.0 * gaussian_psf_image(3.0)).sum(), 1.0)
    model = GaussianPsf(fwhm=3.0)
    np.testing.assert_allclose(psf_image(model, 10.0, 20.0), model.image / model.image.sum())
    for bad in (np.ones((4, 5)), np.full((5, 5), np.nan), np.zeros((5, 5))):
        with pytest.raises(PsfModelError):
            psf_image(bad)
    with pytest.raises(PsfModelError, match="position"):
        psf_image(model)


def test_shifted_psf_matches_a_rendered_shift_and_its_derivative():
    psf = synth_gaussian(4.0, 25)
    moved, d_dx, d_dy = shifted_psf(psf, 0.3, -0.4)
    # a pixel-integrated Gaussian of sigma 1.7 px is band-limited to ~1e-4 of its peak
    np.testing.assert_allclose(moved, synth_gaussian(4.0, 25, dx=0.3, dy=-0.4),
                               atol=1e-4 * psf.max())
    h = 1e-4
    numeric = (shifted_psf(psf, 0.3 + h, -0.4)[0] - shifted_psf(psf, 0.3 - h, -0.4)[0]) / (2 * h)
    np.testing.assert_allclose(d_dx, numeric, atol=1e-6)
    numeric = (shifted_psf(psf, 0.3, -0.4 + h)[0] - shifted_psf(psf, 0.3, -0.4 - h)[0]) / (2 * h)
    np.testing.assert_allclose(d_dy, numeric, atol=1e-6)


def test_empirical_psf_recovers_the_science_psf():
    pair = make_pair(SimulationParams(shape=(512, 512), seed=9, kernel_width_gradient=0.0,
                                      n_transients=0, n_variables=0, n_cosmic_rays=0,
                                      star_density=1000.0, flux_power_index=-1.5))
    stars = pair.truth.catalogues["stars"]
    ok = stars["in_frame"] & ~stars["saturated"] & (stars["flux_science"] > 2000)
    order = np.argsort(-stars["flux_science"][ok])
    psf, n = empirical_psf(pair.science, stars["x"][ok][order], stars["y"][ok][order], size=25,
                           min_separation=15.0)
    truth = pair.science.psf.image_at(255.5, 255.5)[3:-3, 3:-3]
    truth = truth / truth.sum()
    assert n >= 5
    assert psf.shape == (25, 25)
    assert psf.sum() == pytest.approx(1.0)
    # weighted by (flux / sky noise)^2 the bright stars dominate and their noise is
    # ~0.1 % of the peak; fainter sources inside the stamps (not clipped) add ~1 %
    assert np.abs(psf - truth).max() < 0.03 * truth.max()
    assert psf_moments_fwhm(psf) == pytest.approx(psf_moments_fwhm(truth), rel=0.03)
    with pytest.raises(PsfModelError, match="fewer than 3"):
        empirical_psf(pair.science, stars["x"][:2], stars["y"][:2], size=25)


# ----------------------------------------------------------------------------- flags
def test_flag_table():
    bits = list(FLAG_BITS.values())
    assert len(set(bits)) == len(bits)
    assert max(bits) < 63
    assert set(FLAG_DESCRIPTIONS) == set(FLAG_BITS)
    assert set(DiaOptions().flag_planes) <= set(FLAG_BITS)
    # the config module keeps its own list (importing the DIA core at parse time is
    # avoided): it must name exactly the mask-plane flags, the bits below 16
    assert tuple(k for k, b in FLAG_BITS.items() if b < 16) == FLAGGABLE_PLANES
    names = ["SAT", "STREAK", "EDGE"]
    assert decode_flags(flag_value(names)) == ["SAT", "EDGE", "STREAK"]
    assert decode_flags(0) == []


# ----------------------------------------------------------------------------- cut-outs
def _ramp(shape=(50, 60), xy0=(100, 200)):
    img = np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape)
    return Exposure(image=img, mask=np.zeros(shape, np.int32),
                    variance=np.ones(shape, np.float32), xy0=xy0)


def test_cutouts_centre_padding_and_origin():
    exp = _ramp()
    x = np.array([130.4, 101.0, 159.4])
    y = np.array([225.0, 202.2, 249.4])
    out = make_cutouts(x, y, difference=exp, science=exp, size=11)
    assert out["difference"].shape == (3, 11, 11)
    assert out["difference"].dtype == np.float32
    np.testing.assert_array_equal(out["x0"], [125, 96, 154])
    np.testing.assert_array_equal(out["y0"], [220, 197, 244])
    # centre pixel = the pixel holding (x, y); floor(x + 0.5) in parent coordinates
    for i in range(3):
        col, row = math.floor(x[i] + 0.5) - 100, math.floor(y[i] + 0.5) - 200
        assert out["difference"][i, 5, 5] == exp.image[row, col]
    # outside the exposure: NaN (first rows/columns of stamp 1, last of stamp 2)
    assert np.isnan(out["difference"][1, :3, :]).all()
    assert np.isnan(out["difference"][1, :, :4]).all()
    assert np.isfinite(out["difference"][1, 3:, 4:]).all()
    assert np.isnan(out["difference"][2, :, 6:]).all()
    assert np.isnan(out["difference"][2, 6:, :]).all()
    assert np.isfinite(out["difference"][2, :6, :6]).all()
    np.testing.assert_array_equal(out["science"], out["difference"])
    assert np.isnan(out["template"]).all()
    empty = make_cutouts([], [], difference=exp)
    assert empty["difference"].shape == (0, 63, 63)
    with pytest.raises(ConfigError, match="cutout_size"):
        make_cutouts(x, y, difference=exp, size=10)


def test_inputs_must_share_the_difference_grid():
    exp = _ramp()
    other = _ramp(xy0=(0, 0))
    with pytest.raises(ExposureError, match="science"):
        detect_and_measure(exp, gaussian_psf_image(3.0), science=other)


# ------------------------------------------------------------- PSF of the difference
def test_difference_psf_prefers_the_model_then_a_pixel_corrected_gaussian():
    from psfmatch.dia.psf import difference_psf, pixel_corrected_gaussian

    # a FWHM measured by adaptive moments on pixels includes the pixel: the Gaussian
    # drawn from it has that same measured FWHM (pixel integration adds it back; the
    # 1/12 px² is exact for unweighted moments, the adaptive ones agree to 1e-3 from 2.5 px)
    for fwhm in (2.5, 3.5, 6.0):
        assert psf_moments_fwhm(pixel_corrected_gaussian(fwhm)) == pytest.approx(fwhm, rel=1e-3)
    with pytest.raises(PsfModelError, match="pixel"):
        pixel_corrected_gaussian(0.2)  # (0.2/2.355)² < 1/12
    pair = make_pair(SimulationParams(shape=(128, 128), seed=2))
    science = pair.science
    psf, info = difference_psf(science, source="auto", fwhm=4.6)
    assert info["source"] == "model"
    assert psf is science.psf
    bare = Exposure(image=science.image, mask=science.mask, variance=science.variance)
    psf, info = difference_psf(bare, source="auto", fwhm=4.6)
    assert info["source"] == "gaussian"
    assert info["fallback"]
    assert info["fwhm"] == pytest.approx(4.6, rel=2e-3)
    with pytest.raises(PsfModelError, match="no PSF model"):
        difference_psf(bare, source="model", fwhm=4.6)
    with pytest.raises(PsfModelError, match="fewer than 3"):
        difference_psf(bare, source="empirical", fwhm=4.6, star_x=[10.0], star_y=[10.0])
