"""The simulator writes pairs whose blurrier image is the template (blurrier='template')."""

from __future__ import annotations

import numpy as np
import pytest

from psfmatch import synth
from psfmatch.errors import ConfigError

QUIET = {"shape": (192, 192), "star_density": 3000.0, "galaxy_density": 100.0,
         "n_cosmic_rays": 0, "bad_column": None, "saturation": 1.0e9, "kernel_size": 25}


def _swapped(**kw) -> synth.SimulationParams:
    return synth.SimulationParams(**{**QUIET, "template_fwhm": 4.5, "science_fwhm": 3.0,
                                     "blurrier": "template", **kw})


def test_noiseless_template_is_the_truth_kernel_applied_to_the_science_image():
    """T = K ⋆ S + b exactly away from the edges (the truth convolveScience fits)."""
    pair = synth.make_pair(_swapped(seed=5, add_noise=False, n_transients=0, n_variables=0))
    truth = pair.truth
    assert truth.convolved == "science"
    ny, nx = pair.science.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    model = truth.kernel.apply(pair.science.image.astype(np.float64)) + truth.background_at(xx, yy)
    h = truth.kernel.kernel_size // 2 + 1
    inner = (slice(h, -h), slice(h, -h))
    # float32 images: agreement to a few 1e-7 of the brightest pixel
    scale = float(np.max(np.abs(pair.template.image)))
    np.testing.assert_allclose(model[inner], pair.template.image[inner], rtol=0,
                               atol=2e-6 * scale)
    assert pair.template.psf.fwhm == pytest.approx(4.5, rel=0.02)
    assert pair.science.psf.fwhm == pytest.approx(3.0, rel=1e-6)


def test_transients_and_variable_changes_are_in_the_science_image_in_science_counts():
    """Around each science-only source, K ⋆ S + b − T sums to the kernel sum times its flux."""
    pair = synth.make_pair(_swapped(seed=6, add_noise=False, n_transients=6, n_variables=6,
                                    shape=(256, 256)))
    truth = pair.truth
    ny, nx = pair.science.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    residual = (truth.kernel.apply(pair.science.image.astype(np.float64))
                + truth.background_at(xx, yy) - pair.template.image)
    cats = truth.catalogues
    x = np.concatenate([cats["transients"]["x"], cats["variables"]["x"]])
    y = np.concatenate([cats["transients"]["y"], cats["variables"]["y"]])
    flux = np.concatenate([cats["transients"]["flux_science"],
                           cats["variables"]["flux_difference"]])
    # boxes of +-10 px hold > 5 sigma of the blurred PSF (sigma 1.9 px); sources whose box
    # reaches the invalid border of K ⋆ S or another source are skipped
    edge, half = truth.kernel.kernel_size // 2 + 1 + 10, 10
    near = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :]) < 2 * half + 1
    ok = (x > edge) & (x < nx - 1 - edge) & (y > edge) & (y < ny - 1 - edge) \
        & (near.sum(axis=1) == 1)
    assert ok.sum() >= 4
    for xi, yi, fi in zip(x[ok], y[ok], flux[ok], strict=True):
        c, r = round(xi), round(yi)
        box = residual[r - half:r + half + 1, c - half:c + half + 1].sum()
        assert box == pytest.approx(truth.photometric_scale * fi, rel=1e-4)
    columns, _ = synth.source_table(truth)
    var = columns["kind"] == "variable"
    np.testing.assert_allclose(
        columns["flux_difference"][var],
        columns["flux_science"][var] - columns["flux_template"][var] / truth.photometric_scale)
    stars = cats["stars"]
    np.testing.assert_allclose(stars["flux_template"],
                               truth.photometric_scale * stars["flux_science"])


def test_with_equal_skies_the_swapped_pair_is_the_forward_pair_with_roles_exchanged():
    base = {**QUIET, "seed": 9, "sky_template": 150.0, "sky_science": 150.0,
            "n_transients": 0, "n_variables": 0, "n_cosmic_rays": 4}
    forward = synth.make_pair(synth.SimulationParams(**base))
    swapped = synth.make_pair(_swapped(**base))
    for a, b in ((forward.science, swapped.template), (forward.template, swapped.science)):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.variance, b.variance)
    assert forward.truth.kernel.to_dict() == swapped.truth.kernel.to_dict()
    assert swapped.truth.to_dict()["convolved"] == "science"
    assert synth.Truth.from_dict(swapped.truth.to_dict()).convolved == "science"


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"template_fwhm": 3.0, "science_fwhm": 4.5}, "template_fwhm"),
        ({"template_offset": (1.0, 0.0, 0.0)}, "template_offset"),
        ({"blurrier": "both"}, "blurrier"),
    ],
)
def test_invalid_blurrier_settings_are_refused_naming_the_field(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        _swapped(**kw)
