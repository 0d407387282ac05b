"""Tests of psfmatch.align: how the warp step chooses and records its registration.

The pair comes from :func:`psfmatch.synth.make_pair` with ``template_offset``: its WCSs
encode the true rotation + shift exactly, so the WCS path and the sources path can be
compared with each other and with the truth.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from psfmatch import io
from psfmatch.align import align_template, choose_registration
from psfmatch.config import PsfMatchConfig, RegistrationOptions, WarpOptions
from psfmatch.errors import RegistrationError, WarpError
from psfmatch.steps.fields import step_config
from psfmatch.steps.prepare import warp
from psfmatch.synth import SimulationParams, make_pair

OFFSET = (12.3, -7.6, 0.5)
WARPING = PsfMatchConfig.from_lsst({}).warping


@pytest.fixture(scope="module")
def pair():
    return make_pair(SimulationParams(shape=(384, 384), template_offset=OFFSET, seed=9,
                                      star_density=4000.0))


def _truth_at(x, y):
    centre = np.array([383 / 2.0, 383 / 2.0])
    t = math.radians(OFFSET[2])
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    v = (np.stack([x, y], -1) - centre) @ rot.T + centre + np.asarray(OFFSET[:2])
    return v[..., 0], v[..., 1]


def test_choice_follows_the_wcs_situation(pair):
    sci, tmp = pair.science, pair.template
    both = choose_registration(sci, tmp, "auto")
    assert both["method"] == "wcs"
    assert 0.8 < both["wcs_overlap_fraction"] < 1.0  # the offset template misses a border
    assert both["reason"].startswith("both images have a WCS and ")
    cases = {
        "neither image has a WCS": (sci.with_(wcs=None), tmp.with_(wcs=None)),
        "the science image has no WCS": (sci.with_(wcs=None), tmp),
        "the template has no WCS": (sci, tmp.with_(wcs=None)),
    }
    for reason, (s, t) in cases.items():
        record = choose_registration(s, t, "auto")
        assert (record["method"], record["reason"]) == ("sources", reason)
    far = tmp.wcs.deepcopy()
    far.wcs.crval = [far.wcs.crval[0] + 10.0, far.wcs.crval[1]]
    apart = choose_registration(sci, tmp.with_(wcs=far), "auto")
    assert apart["method"] == "sources"
    assert apart["wcs_overlap_fraction"] == 0.0
    assert apart["reason"].startswith("the WCSs do not overlap")
    for mode in ("wcs", "sources"):  # an explicit mode is taken as it is
        assert choose_registration(sci.with_(wcs=None), tmp, mode)["method"] == mode


def test_sources_path_matches_the_wcs_path(pair):
    by_wcs, info_wcs, none = align_template(pair.template, pair.science, warp=WarpOptions(),
                                            warping=WARPING, label="p")
    assert none is None
    assert info_wcs["registration"]["method"] == "wcs"
    by_src, info_src, transform = align_template(
        pair.template.with_(wcs=None), pair.science.with_(wcs=None), warp=WarpOptions(),
        warping=WARPING, label="p")
    record = info_src["registration"]
    assert record["method"] == "sources"
    assert record["transform"]["n_matches"] == transform.n_matches >= 50
    x0, y0, x1, y1 = pair.science.bbox
    x = np.array([x0, x1, x0, x1], float)
    y = np.array([y0, y0, y1, y1], float)
    fx, fy = transform(x, y)
    tx, ty = _truth_at(x, y)
    error = np.hypot(fx - tx, fy - ty)
    formal = np.asarray(record["corner_error_pix"])
    # each corner's 2-D error is a draw of scale sqrt(2) x the per-axis formal error
    assert np.all(error < 4.0 * math.sqrt(2.0) * formal), (error, formal)
    # Same kernels, positions a few hundredths of a pixel apart: on the sky (most pixels)
    # the two warps differ by that shift times the gradient of the interpolated noise,
    # ~0.03 px x 1.5 sigma/px ~ 0.05 sigma (measured median 0.04); coverage alike.
    good = np.isfinite(by_wcs.image) & np.isfinite(by_src.image)
    assert abs(good.mean() - np.isfinite(by_wcs.image).mean()) < 0.01
    ratio = np.abs(by_src.image[good] - by_wcs.image[good]) / np.sqrt(by_wcs.variance[good])
    assert np.median(ratio) < 0.1
    assert by_src.xy0 == pair.science.xy0
    assert by_src.wcs is None


def test_failed_registration_says_why_sources_were_used(pair):
    blank = pair.template.with_(wcs=None, image=np.zeros_like(pair.template.image))
    with pytest.raises(RegistrationError) as info:
        align_template(blank, pair.science.with_(wcs=None), warp=WarpOptions(),
                       warping=WARPING, label="p")
    err = info.value
    assert err.n_template == 0
    assert err.n_matches == 0
    text = str(err)
    assert "cannot register the template on the science image by sources: too few " \
           "sources detected" in text
    assert "registered by sources because neither image has a WCS" in text
    assert "set warp.registration: wcs" in text  # auto: the way out for one-grid images
    with pytest.raises(RegistrationError) as forced:
        align_template(blank, pair.science, warp=WarpOptions(registration="sources"),
                       warping=WARPING, label="p")
    assert "warp.registration is 'sources'" in str(forced.value)
    assert "set warp.registration" not in str(forced.value)


def test_wcs_mode_without_wcs_is_a_warp_error(pair):
    with pytest.raises(WarpError, match="template has no WCS"):
        align_template(pair.template.with_(wcs=None), pair.science,
                       warp=WarpOptions(registration="wcs"), warping=WARPING, label="p")


def test_tight_limits_refuse_the_fit(pair):
    options = WarpOptions(sources=RegistrationOptions(max_rms=0.01))
    with pytest.raises(RegistrationError, match=r"matched sources scatter too much: \d+ matched "
                                                r"sources .*limit 0\.01 px"):
        align_template(pair.template.with_(wcs=None), pair.science.with_(wcs=None),
                       warp=options, warping=WARPING, label="p")


def test_warp_step_writes_the_registration(tmp_path, pair):
    io.write_exposure(tmp_path / "t.fits", pair.template)
    io.write_exposure(tmp_path / "s.fits", pair.science)
    config = {"psf_match": {}, "warp": {"registration": "sources",
                                        "sources": {"min_matches": 20}}}
    warp(template_path=tmp_path / "t.fits", science_path=tmp_path / "s.fits",
         output_path=tmp_path / "w.fits", info_path=tmp_path / "warp.json",
         config=step_config("warp", config), label="pair 'p'")
    info = io.read_json(tmp_path / "warp.json")
    assert info["registration"]["requested"] == "sources"
    assert info["registration"]["method"] == "sources"
    assert set(info["registration"]["transform"]) == {"matrix", "offset", "n_matches",
                                                      "rms_pix", "scale", "rotation_deg"}
    assert info["registration"]["transform"]["rotation_deg"] == pytest.approx(0.5, abs=0.02)
    warped = io.read_exposure(tmp_path / "w.fits")
    assert warped.wcs is not None  # the science WCS, attached as is
