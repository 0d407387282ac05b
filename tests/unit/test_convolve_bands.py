"""The convolution in row bands against the whole-image convolution.

Masks, planes, variance, NaN pattern and the EDGE border must be identical; the image
may differ only by the float32 rounding of the transforms, which scales with the
brightest pixel (the transform's error spreads over the whole band): the bound below
is 1e-5 of the image's largest absolute value, 20x the ~5e-7 relative error of a
float32 FFT of these sizes.
"""

from __future__ import annotations

import numpy as np
import pytest

from psfmatch import io
from psfmatch.convolve_bands import BandConvolver
from psfmatch.kernel import SpatialKernel
from psfmatch.modes import CONVOLVE_SCIENCE, difference_convolve_science, restore_mask_planes
from psfmatch.spatial import SpatialFunction
from psfmatch.steps.difference import convolve
from psfmatch.steps.fields import step_config
from psfmatch.subtract import convolve_exposure, prepare_template_mask, subtract
from psfmatch.synth import SimulationParams, make_pair

SHAPE = (150, 120)


@pytest.fixture(scope="module")
def pair():
    p = make_pair(SimulationParams(shape=SHAPE, seed=11, star_density=3000.0, xy0=(7, -3)))
    template = p.template
    image = template.image.copy()
    image[40, 30:34] = np.nan  # poisons its footprint
    mask = template.mask.copy()
    mask[90:95, 60] |= np.int32(1 << template.mask_planes["NO_DATA"])
    mask[20, 100] |= np.int32(1 << template.mask_planes["SAT"])  # renamed SAT_TEMPLATE
    return p.science, template.with_(image=image, mask=mask, psf=None)


def _kernel(size: int = 11) -> SpatialKernel:
    """A kernel whose shape and background vary over the image (order 1 / order 2)."""
    y, x = np.mgrid[-(size // 2) : size // 2 + 1, -(size // 2) : size // 2 + 1]
    basis = np.stack([np.exp(-(x**2 + y**2) / (2 * s**2)) for s in (1.0, 1.6, 2.4)])
    bbox = (7, -3, 7 + SHAPE[1] - 1, -3 + SHAPE[0] - 1)
    func = SpatialFunction(1, "chebyshev1", bbox)
    coeffs = np.array([[0.02, 0.003, -0.002], [0.01, -0.002, 0.001], [0.004, 0.001, 0.0]])
    bg = SpatialFunction(2, "chebyshev1", bbox)
    return SpatialKernel(basis=basis, coefficients=coeffs, kernel_function=func,
                         background_coefficients=np.array([1.0, 0.5, -0.3, 0.1, 0.2, -0.1]),
                         background_function=bg)


def _bands(exposure, kernel, band):
    conv = BandConvolver(kernel, exposure.shape, exposure.xy0, band=band, variance_block=band)
    out = []
    for start, stop in conv.bands():
        lo, hi = conv.rows_needed(start, stop)
        rows = exposure.with_(image=exposure.image[lo:hi], mask=exposure.mask[lo:hi],
                              variance=exposure.variance[lo:hi],
                              xy0=(exposure.xy0[0], exposure.xy0[1] + lo))
        out.append(conv.convolve(rows, start, stop))
    return out


def _assert_same(bands_image, bands_mask, bands_var, whole):
    assert np.array_equal(bands_mask, whole.mask)
    assert np.array_equal(bands_var.view(np.uint32), whole.variance.view(np.uint32))
    assert np.array_equal(np.isnan(bands_image), np.isnan(whole.image))
    finite = np.isfinite(whole.image)
    scale = np.nanmax(np.abs(whole.image))
    assert np.max(np.abs(bands_image[finite] - whole.image[finite])) < 1e-5 * scale


@pytest.mark.parametrize("band", [16, 32, 64, 512])
def test_bands_give_the_whole_image_convolution(pair, band):
    _, template = pair
    kernel = _kernel()
    prepared = prepare_template_mask(template)
    whole = convolve_exposure(prepared, kernel, variance_block=band)
    parts = _bands(prepared, kernel, band)
    assert all(p.mask_planes == whole.mask_planes for p in parts)
    assert parts[0].xy0 == whole.xy0
    _assert_same(*(np.concatenate([getattr(p, f) for p in parts])
                   for f in ("image", "mask", "variance")), whole)
    assert whole.plane("EDGE")[:5].all()  # the k // 2 border
    assert whole.plane("NO_DATA")[40, 25:39].all()  # the NaN's footprint


def _step(tmp_path, science, template, kernel, mode, config):
    paths = {name: tmp_path / f"{name}.fits" for name in ("t", "s", "k", "d", "m")}
    io.write_exposure(paths["t"], template)
    io.write_exposure(paths["s"], science)
    io.write_kernel(paths["k"], kernel)
    io.write_table(tmp_path / "c.parquet", {"status": np.array(["GOOD"]),
                                            "stage": np.array([""]), "reason": np.array([""]),
                                            "cell": np.array([0]), "rank": np.array([0])})
    convolved = "science" if mode == CONVOLVE_SCIENCE else "template"
    record = {"mode": mode, "convolved": convolved, "preconvolution": False,
              "template_coverage": 1.0,
              "decision": {"mode": mode, "convolved": convolved, "requested": mode,
                           "reason": "configured"},
              "roles": {"template": "science", "science": "template"} if mode == CONVOLVE_SCIENCE
              else {"template": "template", "science": "science"}}
    io.write_json(tmp_path / "mode.json", record)
    convolve(template_path=paths["t"], science_path=paths["s"], kernel_path=paths["k"],
             candidates_path=tmp_path / "c.parquet", difference_path=paths["d"],
             matched_path=paths["m"], metrics_path=tmp_path / "metrics.json",
             config=step_config("convolve", config), label="p", mode_path=tmp_path / "mode.json")
    return io.read_exposure(paths["d"]), io.read_exposure(paths["m"])


@pytest.mark.parametrize("background", [True, False])
@pytest.mark.parametrize("mode", ["convolveTemplate", CONVOLVE_SCIENCE])
def test_the_convolve_step_writes_the_whole_image_difference(tmp_path, pair, mode, background):
    science, template = pair
    science = science.with_(psf=None)
    kernel = _kernel(31)  # 31 px: the 512-row bands see a 15-row halo
    tall = [e.with_(image=np.tile(e.image, (5, 1)), mask=np.tile(e.mask, (5, 1)),
                    variance=np.tile(e.variance, (5, 1))) for e in (science, template)]
    science, template = tall  # 750 rows: two bands of 512 and 238
    config = {"subtract": {"doSubtractBackground": background}}
    difference, matched = _step(tmp_path, science, template, kernel, mode, config)
    # the whole-image reference, on the exposures as the step reads them (a NaN pixel
    # gets NO_DATA on reading)
    science, template = (io.read_exposure(tmp_path / f"{n}.fits") for n in ("s", "t"))
    if mode == CONVOLVE_SCIENCE:
        whole, _ = difference_convolve_science(science, template, kernel,
                                               subtract_background=background)
        expected_matched = prepare_template_mask(template)
        assert matched.metadata["PSFMCONV"] == "science"
    else:
        prepared = prepare_template_mask(template)
        expected_matched = restore_mask_planes(convolve_exposure(prepared, kernel), prepared, ())
        whole = subtract(science, expected_matched, kernel, subtract_background=background)
    assert difference.mask_planes == whole.mask_planes
    _assert_same(difference.image, difference.mask, difference.variance, whole)
    assert matched.mask_planes == expected_matched.mask_planes
    _assert_same(matched.image, matched.mask, matched.variance, expected_matched)
    metrics = io.read_json(tmp_path / "metrics.json")["difference"]
    from psfmatch.diagnostics import residual_statistics

    expected = residual_statistics(whole)
    assert metrics["n_pixels"] == expected["n_pixels"]
    assert metrics["masked_fraction"] == expected["masked_fraction"]
    # D/sigma moves by the image's float32 transform rounding only
    assert metrics["clipped_std"] == pytest.approx(expected["clipped_std"], rel=1e-5)
