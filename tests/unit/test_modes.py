"""Subtraction modes: the auto decision, fitting roles and the convolveScience difference."""

from __future__ import annotations

import numpy as np
import pytest
from tests import modes_sim

from psfmatch.errors import ConfigError, TemplateCoverageError
from psfmatch.modes import (
    AUTO,
    CONVOLVE_SCIENCE,
    CONVOLVE_TEMPLATE,
    basis_fwhms,
    check_template_coverage,
    choose_mode,
    difference_convolve_science,
    fitting_roles,
    psf_axis_fwhm,
    template_coverage,
)
from psfmatch.subtract import convolve_exposure, prepare_template_mask, subtract
from psfmatch.synth import render_gaussians


def _elliptical_psf(fwhm_x: float, fwhm_y: float, size: int = 41) -> np.ndarray:
    off = np.arange(size) - size // 2
    gx = np.exp(-0.5 * (off / (fwhm_x / 2.354820045)) ** 2)
    gy = np.exp(-0.5 * (off / (fwhm_y / 2.354820045)) ** 2)
    img = np.outer(gy, gx)
    return img / img.sum()


@pytest.fixture(scope="module")
def params():
    return modes_sim.params(shape=(256, 256), seed=5)


@pytest.fixture(scope="module")
def pairs(params):
    return {"forward": modes_sim.make(params, swapped=False),
            "swapped": modes_sim.make(params, swapped=True)}


# ----------------------------------------------------------------------------- auto
def test_psf_axis_fwhm_of_point_sampled_gaussians():
    fx, fy = psf_axis_fwhm(_elliptical_psf(3.0, 5.0))
    # adaptive moments are exact for a Gaussian (up to sampling of a 41-px stamp)
    assert (fx, fy) == (pytest.approx(3.0, rel=1e-3), pytest.approx(5.0, rel=1e-3))


@pytest.mark.parametrize(("direction", "expected"), [("forward", CONVOLVE_TEMPLATE),
                                                      ("swapped", CONVOLVE_SCIENCE)])
def test_auto_on_simulated_pairs(pairs, direction, expected):
    pair = pairs[direction]
    centre = (128.0, 128.0)
    t_xy = psf_axis_fwhm(pair.template.psf.image_at(*centre))
    s_xy = psf_axis_fwhm(pair.science.psf.image_at(*centre))
    decision = choose_mode(AUTO, template_fwhm_xy=t_xy, science_fwhm_xy=s_xy)
    assert decision.mode == expected
    assert decision.convolved == ("template" if expected == CONVOLVE_TEMPLATE else "science")
    record = decision.to_dict()
    assert record["reason"] == "shape test per axis"
    assert record["requested"] == AUTO
    assert record["template_fwhm_xy"] == list(t_xy)


def test_auto_convolves_the_template_if_it_is_sharper_on_either_axis():
    # template sharper in x only: ip_diffim's OR rule still convolves the template
    t_xy = psf_axis_fwhm(_elliptical_psf(3.0, 5.0))
    s_xy = psf_axis_fwhm(_elliptical_psf(4.0, 4.0))
    assert choose_mode(AUTO, template_fwhm_xy=t_xy, science_fwhm_xy=s_xy).mode == CONVOLVE_TEMPLATE
    assert choose_mode(AUTO, template_fwhm_xy=(4.5, 5.0),
                       science_fwhm_xy=s_xy).mode == CONVOLVE_SCIENCE
    # equal PSFs: the template is convolved
    assert choose_mode(AUTO, template_fwhm_xy=s_xy, science_fwhm_xy=s_xy).mode == CONVOLVE_TEMPLATE


def test_auto_falls_back_to_mean_fwhm_and_configured_modes_pass_through():
    d = choose_mode(AUTO, template_fwhm_xy=(np.nan, 3.0), science_fwhm_xy=(3.0, 3.0),
                    template_fwhm=5.0, science_fwhm=4.0)
    assert (d.mode, d.reason) == (CONVOLVE_SCIENCE, "shape test on mean FWHM")
    d = choose_mode(CONVOLVE_TEMPLATE, template_fwhm=5.0, science_fwhm=4.0)
    assert (d.mode, d.reason) == (CONVOLVE_TEMPLATE, "configured")
    with pytest.raises(ConfigError, match="aotu"):
        choose_mode("aotu")
    with pytest.raises(ConfigError, match="FWHM"):
        choose_mode(AUTO)


def test_roles_and_basis_fwhms():
    assert fitting_roles(CONVOLVE_TEMPLATE) == ("template", "science")
    assert fitting_roles(CONVOLVE_SCIENCE) == ("science", "template")
    assert basis_fwhms(CONVOLVE_TEMPLATE, template_fwhm=3.0, science_fwhm=4.0) == (3.0, 4.0)
    assert basis_fwhms(CONVOLVE_SCIENCE, template_fwhm=5.0, science_fwhm=4.0) == (4.0, 5.0)
    assert basis_fwhms(CONVOLVE_TEMPLATE, template_fwhm=3.0, science_fwhm=4.0,
                       preconvolved=True) == (3.0, pytest.approx(4.0 * 2**0.5))
    with pytest.raises(ConfigError):
        basis_fwhms(CONVOLVE_SCIENCE, template_fwhm=3.0, science_fwhm=4.0, preconvolved=True)
    with pytest.raises(ConfigError):
        fitting_roles(AUTO)


# ----------------------------------------------------------------------------- convolveScience
def test_convolve_science_is_the_forward_difference_in_science_units(pairs):
    """Same data, roles swapped: D_cs = −D_fwd / κ, variance / κ², same D/σ up to sign."""
    fwd, swp = pairs["forward"], pairs["swapped"]
    d_fwd = subtract(fwd.science, convolve_exposure(prepare_template_mask(fwd.template),
                                                    fwd.kernel), fwd.kernel)
    d_cs, matched = difference_convolve_science(swp.science, swp.template, swp.kernel)
    kappa = swp.kernel.sum_at(127.5, 127.5)
    assert kappa == pytest.approx(1.1, rel=1e-9)
    inner = (slice(16, -16), slice(16, -16))
    np.testing.assert_allclose(d_cs.image[inner], -d_fwd.image[inner] / kappa, atol=2e-3)
    np.testing.assert_allclose(d_cs.variance[inner], d_fwd.variance[inner] / kappa**2, rtol=1e-5)
    # without the background, D moves by b / κ exactly
    d_nobg, _ = difference_convolve_science(swp.science, swp.template, swp.kernel,
                                            subtract_background=False)
    bg = swp.truth.background_at(128.0, 100.0)
    shift = float(d_cs.image[100, 128]) - float(d_nobg.image[100, 128])
    assert shift == pytest.approx(bg / kappa, rel=1e-3)  # float32 rounding of ~1e2 values
    # matched science: K ⋆ S / κ, in science units with the template's PSF
    assert matched.psf is swp.template.psf
    assert d_cs.psf is swp.template.psf
    assert np.nanmedian(matched.variance[inner]) == pytest.approx(
        np.median(swp.science.variance) * np.sum(swp.kernel.image_at(127.5, 127.5) ** 2) / kappa**2,
        rel=0.02)


def test_convolve_science_transient_keeps_its_science_flux_and_sign(pairs, params):
    swp = pairs["swapped"]
    flux = 5000.0
    science = swp.science.image.astype(np.float64).copy()
    render_gaussians(science, 128.0, 128.0, flux, params.template_fwhm / 2.354820045)
    with_transient = swp.science.with_(image=science.astype(np.float32))
    d0, _ = difference_convolve_science(swp.science, swp.template, swp.kernel)
    d1, _ = difference_convolve_science(with_transient, swp.template, swp.kernel)
    # linear: the transient's own image in D, summed over a wide stamp (kernel + PSF)
    stamp = (slice(98, 159), slice(98, 159))
    measured = float(np.sum(d1.image[stamp].astype(np.float64) - d0.image[stamp]))
    assert measured == pytest.approx(flux, rel=1e-3)  # float32 rounding only


def test_convolve_science_masks(pairs):
    swp = pairs["swapped"]
    sci_mask = swp.science.mask.copy()
    tmp_mask = swp.template.mask.copy()
    cr = 1 << swp.science.mask_planes["CR"]
    sci_mask[100, 100] |= cr
    tmp_mask[60, 60] |= cr
    tmp_mask[200, 200] |= 1 << swp.template.mask_planes["BAD"]
    d, _ = difference_convolve_science(swp.science.with_(mask=sci_mask),
                                       swp.template.with_(mask=tmp_mask), swp.kernel)
    half = swp.kernel.kernel_size // 2
    # science planes are dilated by the kernel footprint
    assert d.plane("CR")[100 - half:100 + half + 1, 100 - half:100 + half + 1].all()
    assert d.plane("CR").sum() == swp.kernel.kernel_size**2
    # template planes follow ip_diffim's clearing: CR dropped, BAD kept undilated
    assert not d.plane("CR")[60, 60]
    assert d.plane("BAD")[200, 200]
    assert d.plane("BAD").sum() == 1
    # the unconvolvable border is EDGE
    assert d.plane("EDGE")[:half].all()
    assert not d.plane("EDGE")[half:-half, half:-half].any()


# ----------------------------------------------------------------------------- coverage
def test_template_coverage_and_required_fraction(pairs):
    pair = pairs["forward"]
    assert template_coverage(pair.template, pair.science) == 1.0
    mask = pair.template.mask.copy()
    mask[:, 26:] |= 1 << pair.template.mask_planes["NO_DATA"]
    partial = pair.template.with_(mask=mask)
    fraction = template_coverage(partial, pair.science)
    assert fraction == pytest.approx(26 / 256)
    check_template_coverage(fraction, required=0.1, label="pair 'p1'")
    with pytest.raises(TemplateCoverageError, match=r"pair 'p1'.*9\.4 %.*0\.15"):
        check_template_coverage(24 / 256, required=0.15, label="pair 'p1'")
    # a template that does not cover the science bbox counts as missing data
    cut = pair.template.with_(image=pair.template.image[:, :128], mask=pair.template.mask[:, :128],
                              variance=pair.template.variance[:, :128])
    assert template_coverage(cut, pair.science) == pytest.approx(0.5)

