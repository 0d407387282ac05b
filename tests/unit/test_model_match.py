"""Model-PSF matching: the expectations of ip_diffim's tests/test_modelPsfMatch.py and the
rules of docs/model-psf.md.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from psfmatch.config import ModelPsfMatchConfig
from psfmatch.errors import ConfigError, InsufficientAreaError, KernelTooLargeError
from psfmatch.exposure import Exposure
from psfmatch.model_match import (
    cell_grid,
    match_psf_models,
    next_odd,
    padded_psf_size,
    psf_matched_exposure,
)
from psfmatch.psf import DoubleGaussianPsf

# test_modelPsfMatch: ModelPsfMatch defaults with kernelSize = kernelSizeMin = 9 on a
# 256 x 256 exposure (2 x sizeCellX) whose PSF is DoubleGaussianPsf(11, 11, 2.0).
BBOX = (0, 0, 255, 255)
SMALL = {"kernelSize": 9, "kernelSizeMin": 9}


def _match(psf, reference, *, bbox=BBOX, kernel_sum=1.0, padding=None, **kernel):
    """match_psf_models with ModelPsfMatch's defaults, SMALL and ``kernel`` (LSST names)."""
    return match_psf_models(
        psf, reference, bbox=bbox, kernel_sum=kernel_sum,
        kernel=ModelPsfMatchConfig.kernel_from_lsst({**SMALL, **kernel}),
        padding=ModelPsfMatchConfig.from_lsst(padding or {}, where="model_psf_match.psf_match"),
    )


@pytest.fixture(scope="module")
def exposure_psf():
    return DoubleGaussianPsf(2.0, size=11)


def _exposure(shape=(64, 64), psf=None):
    rng = np.random.default_rng(5)
    image = rng.normal(0.0, 1.0, shape).astype(np.float32)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.cdelt = [-5e-5, 5e-5]
    return Exposure(image=image, mask=np.zeros(shape, np.int32),
                    variance=np.ones(shape, np.float32), wcs=wcs, psf=psf,
                    metadata={"VISIT": 1234, "FILTER": "r", "EXPTIME": 30.0}, xy0=(100, 200))


def test_next_odd_and_padding_rule():
    assert [next_odd(v) for v in (12.6, 13.0, 29.4, 14.0)] == [13, 13, 31, 15]
    # defaults: kernelSize 21 -> minPsfSize nextOdd(29.4) = 31
    assert padded_psf_size(23, kernel_size=21, do_auto_pad_psf=True, auto_pad_psf_to=1.4,
                           pad_psf_by=0) == (31, 8)
    assert padded_psf_size(41, kernel_size=21, do_auto_pad_psf=True, auto_pad_psf_to=1.4,
                           pad_psf_by=0) == (41, 0)


def test_cell_grid_matches_the_reference_example():
    grid = cell_grid(BBOX, size_cell_x=128, size_cell_y=128)
    assert grid.region == (-128, -128, 383, 383)
    np.testing.assert_array_equal(grid.xs, [-64, 64, 192, 320])
    np.testing.assert_array_equal(grid.ys, [-64, 64, 192, 320])
    assert len(grid.positions) == 16


def test_insufficient_area_without_the_cell_growth():
    # ip_diffim grows the bbox by one cell (since 2017-12), which always leaves >= 2 cells;
    # without it (the earlier rule) an exposure smaller than a cell has none.
    with pytest.raises(InsufficientAreaError, match="Insufficient area to match"):
        cell_grid((0, 0, 99, 99), size_cell_x=128, size_cell_y=128, grow_cells=0)


def test_too_big(exposure_psf):
    """testTooBig: no auto padding, kernelSize 11 > 9 (largest odd below 11) -> error."""
    with pytest.raises(KernelTooLargeError) as err:
        _match(exposure_psf, DoubleGaussianPsf(3.7, size=11), kernelSize=11, kernelSizeMin=11,
               padding={"doAutoPadPsf": False})
    message = str(err.value)
    for remedy in ("kernelSize <= 9", "doAutoPadPsf: true", "padPsfBy >= 2"):
        assert remedy in message


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("kernel_sum", [0.5, 1.0, 2.7])
def test_match_kernel_sum(exposure_psf, order, kernel_sum):
    """testMatch: the kernel's sum at (0, 0) equals kernelSum (7 places)."""
    result = _match(exposure_psf, DoubleGaussianPsf(3.7, size=13), kernel_sum=kernel_sum,
                    spatialKernelOrder=order)
    assert result.kernel.sum_at(0.0, 0.0) == pytest.approx(kernel_sum, abs=5e-8)
    assert result.kernel.kernel_function.order == order
    assert set(result.cells["status"]) == {"GOOD"}
    assert len(result.cells["x"]) == 16


def test_normalised_convolution_keeps_flux_whatever_the_kernel_sum(exposure_psf):
    """doNormalize: each output pixel is divided by the local kernel sum.

    A constant image stays exactly constant for any ``kernelSum``, i.e. ``kernelSum``
    never changes the photometric scale of the output
    (docs/model-psf.md#normalised-convolution). (It does change the shape slightly: the
    kernel becomes ``B0 + R/kernelSum`` with ``R`` the fitted zero-sum part, so
    ``kernelSum`` leaves the output pixels alone only in their flux scale.)
    """
    exposure = _exposure(psf=exposure_psf)
    exposure = exposure.with_(image=np.full(exposure.shape, 7.0, np.float32))
    for kernel_sum in (0.5, 2.7):
        result = _match(exposure_psf, DoubleGaussianPsf(3.7, size=13), bbox=exposure.bbox,
                        kernel_sum=kernel_sum)
        out = psf_matched_exposure(exposure, result.kernel, result.reference_image)
        finite = np.isfinite(out.image)
        assert finite.sum() == (64 - 8) ** 2
        # the image is correlated in float32 FFTs: relative rounding up to ~1e-5
        np.testing.assert_allclose(out.image[finite], 7.0, rtol=5e-5)
        # variance sum(K^2 V)/sum(K)^2: finite and positive (its size reflects the
        # under-determined 25-pixel / 27-unknown fits of this tiny setup,
        # docs/model-psf.md#psf-candidates)
        assert np.all(np.isfinite(out.variance[finite]) & (out.variance[finite] > 0))


def test_adjust_model_size(exposure_psf):
    """testAdjustModelSize: a 13 x 13 reference is resized to the 11 x 11 PSF images."""
    result = _match(exposure_psf, DoubleGaussianPsf(3.7, size=13),
                    padding={"doAutoPadPsf": False})
    assert result.psf_size == 11
    assert result.reference_image.shape == (11, 11)
    assert result.reference.sigma1 == 3.7


def test_pad_psf(exposure_psf):
    """testPadPsf: auto padding -> nextOdd(9 x 1.4) = 13; padPsfBy 0/2/4 -> 11/13/15."""
    reference = DoubleGaussianPsf(3.7, size=13)
    auto = _match(exposure_psf, reference)
    assert auto.reference_image.shape == (13, 13)
    for pad, width in ((0, 11), (2, 13), (4, 15)):
        result = _match(exposure_psf, reference,
                        padding={"doAutoPadPsf": False, "padPsfBy": pad})
        assert result.reference_image.shape == (width, width)
        assert result.padding == pad
    for pad in (1, 3, 5):
        with pytest.raises(ValueError, match="padPsfBy must be even"):
            _match(exposure_psf, reference, padding={"doAutoPadPsf": False, "padPsfBy": pad})
    assert issubclass(ConfigError, ValueError)


def test_propagate_metadata_wcs_and_edges(exposure_psf):
    """testPropagateVisitInfo, plus afw's edge pixels and the attached target PSF."""
    exposure = _exposure(psf=exposure_psf)
    result = _match(exposure_psf, DoubleGaussianPsf(3.7, size=13), bbox=exposure.bbox)
    out = psf_matched_exposure(exposure, result.kernel, result.reference_image)
    assert out.metadata == exposure.metadata
    assert out.xy0 == exposure.xy0
    assert out.wcs.to_header() == exposure.wcs.to_header()
    np.testing.assert_allclose(out.psf.image, result.reference_image / result.reference_image.sum())
    half = 9 // 2
    border = np.ones(exposure.shape, bool)
    border[half:-half, half:-half] = False
    assert np.all(np.isnan(out.image[border])) and np.all(np.isinf(out.variance[border]))
    assert np.all(out.mask[border] == 1 << out.mask_planes["NO_DATA"])
    assert np.all(np.isfinite(out.image[~border]))
