"""A real pair with its WCS removed, registered by its stars (skipped without ../shared).

JWST NIRCam F200W, two epochs resampled by the sfft authors onto one grid (identical WCS
headers): the WCS path is the identity. Written without any WCS, the pair must be
registered by sources (``warp.registration: auto``), land close to the identity and
subtract about as well as through the WCS.

How close is limited by the data, not by the fit (the issue asked for 0.1 px; no pair of
``shared/data/real`` supports that honestly):

* the fit itself is precise: ~160 matched objects, formal 1σ of the mapped position
  0.006 px at the centre and ~0.02 px at the corners;
* but the two epochs' PSFs differ (telescope position angles 251° and 41°: rotated
  diffraction spikes), so the adaptive-moment centroid of one object differs between
  the epochs by ~0.1 px: the registered transform is the identity shifted by about
  (-0.07, -0.08) px at the centre (max 0.18 px at a corner);
* the fitted PSF-matching kernel shows which alignment the pixels prefer: through the
  WCS its centroid is (0.01, -0.01) px, after registration by sources it is about
  (0.07, 0.07) px: it absorbs the registration's offset, at a ~2 % cost in the width of
  D/σ (1.18 vs 1.15).

The 2MASS pair (tests/unit/test_register.py) is limited by its WCS instead (the WCS fits
the matched stars to 0.115 px rms; median disagreement 0.10 px, max 0.21 px). The other
pairs are too small (DECam cutouts) or their WCSs disagree with their stars by up to 1 px
(the sfft DECam stamps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from psfmatch import io
from psfmatch.steps.ingest import ingest

from .chain import run_pair

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
JWST = REAL / "jwst_nircam_a2744_f200w"
STEMS = {"template": "jw01324001001-01324-o001_t001_nircam_clear-f200w_i2d_stamp",
         "science": "jw02561001002-02561-o001_t003_nircam_clear-f200w_i2d_stamp"}


def _kernel_centroid(kernel_path: Path) -> np.ndarray:
    """First moment (px) of the kernel image at the centre of the fitted region."""
    kernel = io.read_kernel(kernel_path)
    image = kernel.image_at(*kernel.centre)
    n = image.shape[0]
    yy, xx = np.mgrid[:n, :n] - n // 2
    return np.array([(image * xx).sum(), (image * yy).sum()]) / image.sum()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not JWST.is_dir():
        pytest.skip(f"real data folder {JWST} is absent")
    root = tmp_path_factory.mktemp("real_registration")
    out = {}
    for mode in ("wcs", "no_wcs"):
        work = root / mode
        work.mkdir()
        for role, stem in STEMS.items():
            path = work / f"{role}.fits"
            ingest(inputs={"image": str(JWST / f"{stem}.fits"),
                           "error": str(JWST / f"{stem}.noise.fits")},
                   output_path=path, label=role)
            if mode == "no_wcs":
                io.write_exposure(path, io.read_exposure(path).with_(wcs=None))
        out[mode] = run_pair(work, work / "template.fits", work / "science.fits")
    return out


def test_registered_by_sources_close_to_the_wcs_path(runs):
    registration = io.read_json(runs["no_wcs"]["warp.json"])["registration"]
    assert registration["method"] == "sources"
    assert io.read_json(runs["wcs"]["warp.json"])["registration"]["method"] == "wcs"
    transform = registration["transform"]
    matrix, offset = np.array(transform["matrix"]), np.array(transform["offset"])
    # the WCS path maps every pixel onto itself (identical WCS headers): compare there
    yy, xx = np.mgrid[0:900:8, 0:900:8].astype(float)
    fx = matrix[0, 0] * xx + matrix[0, 1] * yy + offset[0]
    fy = matrix[1, 0] * xx + matrix[1, 1] * yy + offset[1]
    distance = np.hypot(fx - xx, fy - yy)
    assert transform["n_matches"] >= 100
    # Bounds the data support (module docstring; measured: median 0.107, max 0.175 px).
    assert np.median(distance) < 0.15
    assert distance.max() < 0.25
    # ... while the fit's own uncertainty is far smaller (0.02 px at the corners): the
    # disagreement is the PSF-dependent centroid offset between the epochs.
    assert max(registration["corner_error_pix"]) < 0.04


def test_kernel_absorbs_the_registration_offset(runs):
    through_wcs = _kernel_centroid(runs["wcs"]["kernel.fits"])
    registered = _kernel_centroid(runs["no_wcs"]["kernel.fits"])
    transform = io.read_json(runs["no_wcs"]["warp.json"])["registration"]["transform"]
    matrix, offset = np.array(transform["matrix"]), np.array(transform["offset"])
    centre = np.array([449.5, 449.5])
    shift = matrix @ centre + offset - centre  # template - science position at the centre
    # Through the WCS the kernel is centred (the pixels are aligned); after registration
    # it moves by the registration's shift at the centre (template features shifted by
    # -shift are moved back by the kernel), to within the kernel centroid's scatter.
    assert np.hypot(*through_wcs) < 0.05
    np.testing.assert_allclose(registered, through_wcs - shift, atol=0.05)


def test_subtraction_close_to_the_wcs_path(runs):
    metrics = {mode: io.read_json(paths["metrics.json"]) for mode, paths in runs.items()}
    assert metrics["no_wcs"]["kernel_sum"] == pytest.approx(metrics["wcs"]["kernel_sum"],
                                                            rel=0.01)
    width = {mode: m["difference"]["clipped_std"] for mode, m in metrics.items()}
    # measured 1.177 vs 1.154 (drizzled noise is correlated: both exceed 1)
    assert width["no_wcs"] == pytest.approx(width["wcs"], rel=0.05)
    assert abs(metrics["no_wcs"]["difference"]["clipped_mean"]) < 0.05
