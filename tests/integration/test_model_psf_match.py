"""Model-PSF matching end to end through the step functions (files in, files out)."""

from __future__ import annotations

import numpy as np
import pytest
from tests.conftest import REAL_DATA

from psfmatch import io
from psfmatch.basis import SIGMA_TO_FWHM
from psfmatch.config import model_kernel_config
from psfmatch.errors import ConfigError, PsfModelError
from psfmatch.exposure import Exposure
from psfmatch.io.psfs import read_psf_model
from psfmatch.psf import GaussianPsf, ImagePsf
from psfmatch.steps.model_psf import model_psf_convolve, model_psf_kernel

DES_PSFEX = REAL_DATA / "psfex_models" / "DECam_00154912_12_psfcat.psf"


def _gaussian_stars(shape, positions, flux, sigma):
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    img = np.zeros(shape)
    for x, y in positions:
        img += flux * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    return img


def _run(tmp_path, exposure_path, target, kernel_sum=1.0, psf=None):
    out = {name: str(tmp_path / name) for name in
           ("kernel.fits", "cells.parquet", "target_psf.fits", "matched.fits", "metrics.json")}
    inputs = {"image": str(exposure_path), **({"psf": str(psf)} if psf else {})}
    model_psf_kernel(
        inputs=inputs, reader={}, target_inputs={},
        config={"model_psf_match": {"target": target, "kernel_sum": kernel_sum}},
        kernel_path=out["kernel.fits"], cells_path=out["cells.parquet"],
        target_psf_path=out["target_psf.fits"], label="exposure 'test'",
    )
    model_psf_convolve(
        inputs=inputs, reader={}, kernel_path=out["kernel.fits"], cells_path=out["cells.parquet"],
        target_psf_path=out["target_psf.fits"], matched_path=out["matched.fits"],
        metrics_path=out["metrics.json"], label="exposure 'test'",
    )
    return out


@pytest.mark.parametrize("kernel_sum", [1.0, 0.8])
def test_gaussian_sigma_1p5_to_2p5_measured_on_injected_stars(tmp_path, kernel_sum):
    """Gaussian σ 1.5 → σ 2.5: stars of the matched image have the target profile.

    ``kernelSum`` sets the kernel's sum everywhere (to 1e-6) and, the convolution being
    normalised, never the flux. As in ip_diffim (which overwrites only the constant
    coefficient of basis 0), ``kernelSum ≠ 1`` scales the fitted zero-sum part of the
    normalised kernel by ``1/kernelSum`` and so distorts the matched PSF: the profile
    check is for the default ``kernelSum = 1``.
    """
    rng = np.random.default_rng(11)
    shape = (256, 256)
    centres = [(x + rng.uniform(-0.5, 0.5), y + rng.uniform(-0.5, 0.5))
               for x in range(32, 240, 48) for y in range(32, 240, 48)]
    flux, noise = 1.0e5, 1.0
    image = _gaussian_stars(shape, centres, flux, 1.5) + rng.normal(0.0, noise, shape)
    psf = ImagePsf(GaussianPsf(1.5 * SIGMA_TO_FWHM, size=15).image)
    exposure = Exposure(image=image.astype(np.float32), mask=np.zeros(shape, np.int32),
                        variance=np.full(shape, noise**2, np.float32), psf=psf,
                        metadata={"VISIT": 7})
    io.write_exposure(tmp_path / "exposure.fits", exposure)
    out = _run(tmp_path, tmp_path / "exposure.fits",
               {"model": "gaussian", "fwhm": 2.5 * SIGMA_TO_FWHM}, kernel_sum=kernel_sum)

    kernel = io.read_kernel(out["kernel.fits"])
    for x, y in ((0.0, 0.0), (128.0, 128.0), (-100.0, 300.0), (255.0, 10.0)):
        assert kernel.sum_at(x, y) == pytest.approx(kernel_sum, abs=1e-6)
    matched = io.read_exposure(out["matched.fits"])
    assert matched.psf.image.shape[0] >= 21
    np.testing.assert_allclose(matched.psf.fwhm, 2.5 * SIGMA_TO_FWHM, rtol=1e-3)
    assert matched.metadata["VISIT"] == 7 and matched.metadata["PSFMATCH"] == "model"
    # The target peak is flux/(2π·2.5²) ≈ 2546; 1 % of it is 25 while the matched noise
    # is ≈ 1/(2·sqrt(π)·2) ≈ 0.3 per pixel, so noise adds < 0.1 % to the maximum below.
    half = 10
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    worst = 0.0
    for x, y in centres:
        ix, iy = round(x), round(y)
        stamp = matched.image[iy - half : iy + half + 1, ix - half : ix + half + 1] / flux
        # the stamp holds 1 - exp(-8) of a σ 2.5 star; noise adds ~6e-5 to the sum
        assert stamp.sum() == pytest.approx(1.0, abs=0.005)
        target = np.exp(-((xx + ix - x) ** 2 + (yy + iy - y) ** 2) / (2 * 2.5**2)) / (2 * np.pi * 2.5**2)
        worst = max(worst, float(np.abs(stamp - target).max() / target.max()))
    if kernel_sum == 1.0:
        assert worst < 0.01  # measured 0.0036
    else:
        assert worst > 0.05  # the distortion ip_diffim's kernelSum override produces
    metrics = io.read_json(out["metrics.json"])
    assert metrics["cells"] == {**metrics["cells"], "total": 16, "used": 16, "rejected": 0}
    assert metrics["kernel_sum"] == pytest.approx(kernel_sum, abs=1e-6)
    assert (metrics["matched_psf_residual"]["fit_region"]["max"] < 0.01) == (kernel_sum == 1.0)
    assert metrics["spatial_condition_number"] > 0
    cells = io.read_table(out["cells.parquet"]).columns
    assert set(cells["status"]) == {"GOOD"}


def test_exposure_without_psf_model_names_the_file(tmp_path):
    shape = (64, 64)
    exposure = Exposure(image=np.zeros(shape, np.float32), mask=np.zeros(shape, np.int32),
                        variance=np.ones(shape, np.float32))
    path = io.write_exposure(tmp_path / "nopsf.fits", exposure)
    with pytest.raises(PsfModelError, match=r"nopsf\.fits does not contain a PSF model"):
        _run(tmp_path, path, {"model": "gaussian", "fwhm": 5.0})
    assert not (tmp_path / "kernel.fits").exists()


def test_unsupported_kernel_options_are_refused():
    with pytest.raises(ConfigError, match="kernelBasisSet"):
        model_kernel_config({"kernelBasisSet": "delta-function"})
    with pytest.raises(ConfigError, match="spatialKernelClipping"):
        model_kernel_config({"spatialKernelClipping": True})


@pytest.mark.slow
@pytest.mark.realdata
def test_real_psfex_model_matched_to_a_gaussian_at_nine_positions(tmp_path):
    """DES CCD 12 PSFEx model (spatially varying, degree 2) → Gaussian FWHM 7 px.

    Stars drawn from the PSFEx model at 9 positions of the 2048 x 4096 CCD, matched with
    the default ModelPsfMatch config; each matched star equals the target within 2 % of
    its peak (measured: 1.2–1.4 %).
    """
    if not DES_PSFEX.is_file():
        pytest.skip(f"{DES_PSFEX} not available")
    model = read_psf_model(DES_PSFEX)
    shape = (4096, 2048)
    flux = 1.0e5
    image = np.zeros(shape, np.float32)
    positions = [(round(fx * 2047), round(fy * 4095))
                 for fy in (0.05, 0.5, 0.95) for fx in (0.05, 0.5, 0.95)]
    for x, y in positions:
        star = model.image_at(x, y)
        h = star.shape[0] // 2
        image[y - h : y + h + 1, x - h : x + h + 1] += flux * star
    exposure = Exposure(image=image, mask=np.zeros(shape, np.int32),
                        variance=np.ones(shape, np.float32))
    io.write_exposure(tmp_path / "ccd.fits", exposure)
    out = _run(tmp_path, tmp_path / "ccd.fits", {"model": "gaussian", "fwhm": 7.0}, psf=DES_PSFEX)
    matched = io.read_exposure(out["matched.fits"])
    target = GaussianPsf(7.0, size=41).image
    residuals = []
    for x, y in positions:
        stamp = matched.image[y - 20 : y + 21, x - 20 : x + 21] / flux
        residuals.append(float(np.abs(stamp - target).max() / target.max()))
    print("matched-PSF residuals at 9 positions (fraction of peak):",
          " ".join(f"{r:.4f}" for r in residuals))
    assert max(residuals) < 0.02
    metrics = io.read_json(out["metrics.json"])
    assert metrics["verdict"] == "well constrained"
    assert metrics["cells"]["rejected"] == 0
