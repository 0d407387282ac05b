"""The decorrelate step band by band against its whole-image form.

Both read the same raw difference (written by the convolve step) and inputs; the band
form must write the same products. The whitening's transforms are float64 on bands
instead of the whole image (rounding ~1e-16 relative), so a float32 pixel may differ
by one unit in the last place where the float64 value sits on a rounding boundary: the
images are compared to 1e-6 of their noise, variance, masks, headers and metrics exactly.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_convolve_bands import _kernel, _step  # noqa: E402 (sibling test module)

import psfmatch.scale_variance as scale_variance
import psfmatch.steps.finalize as finalize
from psfmatch import io
from psfmatch.steps.fields import step_config
from psfmatch.steps.finalize_whole import decorrelate_whole
from psfmatch.steps.subtraction import read_mode


@pytest.fixture(scope="module")
def pair():
    from psfmatch.synth import SimulationParams, make_pair

    p = make_pair(SimulationParams(shape=(150, 120), seed=5, star_density=3000.0, xy0=(7, -3)))
    mask = p.template.mask.copy()
    mask[60:64, 10:14] |= np.int32(1 << p.template.mask_planes["BAD"])  # kept out of the filter
    return p.science.with_(psf=None), p.template.with_(mask=mask, psf=None)


def _flat(d, prefix=""):
    if isinstance(d, dict):
        return {k2: v2 for k, v in d.items() for k2, v2 in _flat(v, f"{prefix}.{k}").items()}
    if isinstance(d, list) and d and isinstance(d[0], dict):
        return {k2: v2 for i, v in enumerate(d) for k2, v2 in _flat(v, f"{prefix}[{i}]").items()}
    return {prefix: d}


@pytest.mark.parametrize(("mode", "subtract", "difference"), [
    ("convolveTemplate", {}, {}),
    ("convolveScience", {}, {}),
    ("convolveTemplate", {"decorrelate": {"completeVarPlanePropagation": True}},
     {"decorrelation_grid": [2, 3]}),
    ("convolveScience", {"doScaleVariance": False}, {"decorrelation_grid": [3, 1]}),
    ("convolveTemplate", {"doDecorrelation": False}, {}),
])
def test_bands_write_what_the_whole_image_step_writes(tmp_path, monkeypatch, pair, mode,
                                                      subtract, difference):
    monkeypatch.setattr(finalize, "BAND_ROWS", 40)  # 4 bands, each with the filter's halo
    monkeypatch.setattr(scale_variance, "_BAND", 32)
    science, template = pair
    _step(tmp_path, science, template, _kernel(11), mode,
          {"subtract": {"doSubtractBackground": True}})  # raw difference d.fits
    io.write_json(tmp_path / "psf.json", {"template": {"fwhm": 3.0}, "science": {"fwhm": 4.5}})
    config = step_config("decorrelate", {"subtract": subtract, "difference": difference})
    args = dict(raw_path=tmp_path / "d.fits", raw_metrics_path=tmp_path / "metrics.json",
                template_path=tmp_path / "t.fits", science_path=tmp_path / "s.fits",
                subtracted_path=tmp_path / "s.fits", kernel_path=tmp_path / "k.fits",
                mode_path=tmp_path / "mode.json", psf_path=tmp_path / "psf.json",
                config=config, label="p")
    assert read_mode(tmp_path / "mode.json")["mode"] == mode
    out = {}
    for name, step in (("bands", finalize.decorrelate), ("whole", decorrelate_whole)):
        step(**args, output_path=tmp_path / f"{name}.fits",
             metrics_path=tmp_path / f"{name}.json",
             difference_psf_path=tmp_path / f"{name}_psf.fits")
        out[name] = io.read_exposure(tmp_path / f"{name}.fits")
    bands, whole = out["bands"], out["whole"]
    assert np.array_equal(bands.mask, whole.mask)
    assert bands.mask_planes == whole.mask_planes
    assert np.array_equal(bands.variance.view(np.uint32), whole.variance.view(np.uint32))
    finite = np.isfinite(whole.image)
    assert np.array_equal(finite, np.isfinite(bands.image))
    sigma = np.sqrt(whole.variance[finite])
    assert np.max(np.abs(bands.image[finite] - whole.image[finite]) / sigma) < 1e-6
    assert bands.psf.image.tobytes() == whole.psf.image.tobytes()
    assert (tmp_path / "bands_psf.fits").read_bytes() == (tmp_path / "whole_psf.fits").read_bytes()
    a, b = (_flat(json.loads((tmp_path / f"{n}.json").read_text())) for n in ("bands", "whole"))
    assert a.keys() == b.keys()
    differ = {k for k in a if a[k] != b[k] and not (isinstance(a[k], float) and math.isnan(a[k])
                                                   and math.isnan(b[k]))}
    assert differ <= {".difference.mean", ".difference.std", ".difference.clipped_mean",
                      ".difference.clipped_std"}  # only through a last-place pixel change
    for key in differ:
        assert a[key] == pytest.approx(b[key], rel=1e-9)
