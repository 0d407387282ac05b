"""The subtraction_mode step: coverage, the shape test, fitting roles; the coverage guard."""

from __future__ import annotations

import numpy as np
import pytest

from psfmatch import io, synth
from psfmatch.errors import ConfigError, InsufficientCandidatesError, TemplateCoverageError
from psfmatch.exposure import Exposure
from psfmatch.psf import ImagePsf
from psfmatch.steps.subtraction import expected_success, subtraction_mode

SMALL = {"shape": (256, 256), "star_density": 3000.0, "flux_min": 1000.0, "n_transients": 0,
         "n_variables": 0, "kernel_size": 25}


def _write(tmp_path, pair) -> tuple:
    t, s = tmp_path / "t.fits", tmp_path / "s.fits"
    io.write_exposure(t, pair.template.with_(psf=None))
    io.write_exposure(s, pair.science.with_(psf=None))
    return t, s


def _mode(tmp_path, template, science, **subtract) -> dict:
    out = tmp_path / "mode.json"
    subtraction_mode(template_path=template, science_path=science, mode_path=out,
                     config={"subtract": subtract}, label="pair 'p'")
    return io.read_json(out)


@pytest.mark.parametrize(("blurrier", "mode", "roles"), [
    ("science", "convolveTemplate", {"template": "template", "science": "science"}),
    ("template", "convolveScience", {"template": "science", "science": "template"}),
])
def test_auto_convolves_the_sharper_image_from_star_shapes(tmp_path, blurrier, mode, roles):
    fwhm = (3.0, 4.5) if blurrier == "science" else (4.5, 3.0)
    pair = synth.make_pair(synth.SimulationParams(
        **SMALL, seed=2, template_fwhm=fwhm[0], science_fwhm=fwhm[1], blurrier=blurrier))
    record = _mode(tmp_path, *_write(tmp_path, pair), mode="auto")
    assert record["mode"] == mode
    assert record["roles"] == roles
    assert record["decision"]["reason"] == "shape test per axis"
    assert record["decision"]["per_axis_method"] == "adaptive_moments"
    # per-axis star FWHMs: the simulated PSFs are round; 5 % covers the pixel response
    # (included in a measured FWHM) and the kernel's width gradient across the image
    for key, value in (("template_fwhm_xy", fwhm[0]), ("science_fwhm_xy", fwhm[1])):
        assert record["decision"][key] == pytest.approx([value, value], rel=0.05)
    assert record["template_coverage"] == 1.0
    assert record["expected_success"] is True


def _gaussian(fx: float, fy: float, size: int = 31) -> np.ndarray:
    sx, sy = fx / 2.3548200450309493, fy / 2.3548200450309493
    off = np.arange(size) - size // 2
    img = np.outer(np.exp(-0.5 * (off / sy) ** 2), np.exp(-0.5 * (off / sx) ** 2))
    return img / img.sum()


def _blank(psf: np.ndarray, shape=(128, 128)) -> Exposure:
    rng = np.random.default_rng(4)
    return Exposure(rng.normal(0.0, 1.0, shape).astype(np.float32),
                    np.zeros(shape, np.int32), np.ones(shape, np.float32), psf=ImagePsf(psf))


@pytest.mark.parametrize(("template_xy", "science_xy", "mode"), [
    ((5.0, 3.0), (4.0, 4.0), "convolveTemplate"),  # narrower in y: the template is convolved
    ((5.0, 4.5), (4.0, 4.0), "convolveScience"),   # wider on both axes
])
def test_shape_test_uses_the_psf_models_per_axis(tmp_path, template_xy, science_xy, mode):
    t, s = tmp_path / "t.fits", tmp_path / "s.fits"
    io.write_exposure(t, _blank(_gaussian(*template_xy)))
    io.write_exposure(s, _blank(_gaussian(*science_xy)))
    record = _mode(tmp_path, t, s, mode="auto")
    assert record["mode"] == mode
    assert record["decision"]["per_axis_method"] == "psf_model"
    # adaptive moments of a sampled Gaussian return its width to < 1 %
    assert record["decision"]["template_fwhm_xy"] == pytest.approx(template_xy, rel=0.01)


def test_a_configured_mode_is_kept_and_preconvolution_convolves_the_template(tmp_path):
    pair = synth.make_pair(synth.SimulationParams(**SMALL, seed=2))
    t, s = _write(tmp_path, pair)
    assert _mode(tmp_path, t, s, mode="convolveScience")["decision"]["reason"] == "configured"
    out = tmp_path / "pre.json"
    subtraction_mode(template_path=t, science_path=s, mode_path=out, label="pair 'p'",
                     config={"subtract": {"mode": "auto"}, "difference": {"preconvolution": True}})
    record = io.read_json(out)
    assert (record["mode"], record["preconvolution"]) == ("convolveTemplate", True)
    with pytest.raises(ConfigError, match="preconvolution"):
        subtraction_mode(template_path=t, science_path=s, mode_path=out, label="pair 'p'",
                         config={"subtract": {"mode": "convolveScience"},
                                 "difference": {"preconvolution": True}})


def test_low_template_coverage_stops_the_pair_before_any_fitting(tmp_path):
    pair = synth.make_pair(synth.SimulationParams(**SMALL, seed=2))
    template = pair.template
    mask = template.mask.copy()
    mask[:, 20:] |= 1 << template.mask_planes["NO_DATA"]  # 20 of 256 columns left: 7.8 %
    t, s = _write(tmp_path, type(pair)(template.with_(mask=mask), pair.science, pair.truth))
    with pytest.raises(TemplateCoverageError, match=r"pair 'p': template covers 7\.8 % .*0\.1"):
        _mode(tmp_path, t, s, mode="auto")
    assert not (tmp_path / "mode.json").exists()
    # 7.8 % passes a 5 % requirement but is below minTemplateFractionForExpectedSuccess
    record = _mode(tmp_path, t, s, mode="auto", requiredTemplateFraction=0.05)
    assert record["template_coverage"] == pytest.approx(20 / 256)
    assert record["expected_success"] is False


def test_fitting_failures_with_low_coverage_are_reported_as_coverage(tmp_path):
    path = tmp_path / "mode.json"
    io.write_json(path, {"template_coverage": 0.15, "expected_success": False,
                         "min_template_fraction_for_expected_success": 0.2})
    with pytest.raises(TemplateCoverageError,
                       match=r"pair 'p': the kernel fit failed with only 15\.0 % .*"
                             r"InsufficientCandidatesError: too few") as info, \
            expected_success(str(path), "pair 'p'"):
        raise InsufficientCandidatesError("too few")
    assert isinstance(info.value.__cause__, InsufficientCandidatesError)
    io.write_json(path, {"template_coverage": 0.5, "expected_success": True,
                         "min_template_fraction_for_expected_success": 0.2})
    with pytest.raises(InsufficientCandidatesError), expected_success(str(path), "pair 'p'"):
        raise InsufficientCandidatesError("too few")
    with pytest.raises(ValueError, match="not ours"), expected_success(str(path), "pair 'p'"):
        raise ValueError("not ours")
