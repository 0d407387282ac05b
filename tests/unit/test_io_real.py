"""psfmatch.io on the real datasets in ../shared/data/real (skipped when absent)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from psfmatch.io import DECAM_CP_MASK_VALUES, ZTF_MASK_BITS, read_exposure, write_exposure

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
if not REAL.is_dir():
    pytest.skip(f"real data folder {REAL} is absent", allow_module_level=True)

pytestmark = pytest.mark.realdata

DECAM = REAL / "decam_legacysurvey_cp_cutouts" / "testcase6" / "images"
DECAM_STEM = "c4d_181104_072440_{}_g_ls9.S4.fits"
ZTF = REAL / "ztf_sciimg_masked_cutout"
JWST = REAL / "jwst_nircam_a2744_f200w"
JWST_STEM = "jw02561001002-02561-o001_t003_nircam_clear-f200w_i2d_stamp"


def raw_data(path: Path) -> np.ndarray:
    with fits.open(path) as hdul:
        return next(np.array(h.data) for h in hdul if h.data is not None)


@pytest.fixture(scope="module")
def decam():
    paths = {kind: DECAM / DECAM_STEM.format(kind) for kind in ("ooi", "oow", "ood")}
    exposure = read_exposure(paths["ooi"], weight=paths["oow"], mask=paths["ood"],
                             mask_values=DECAM_CP_MASK_VALUES)
    return exposure, {kind: raw_data(p) for kind, p in paths.items()}


def test_decam_cp_weight_and_mask(decam):
    exposure, raw = decam
    assert exposure.shape == (100, 101)
    np.testing.assert_array_equal(exposure.image, raw["ooi"])
    weight = raw["oow"].astype(np.float64)
    good = weight > 0
    assert (~good).any()
    np.testing.assert_allclose(exposure.variance[good], 1.0 / weight[good], rtol=1e-6)
    assert np.all(np.isinf(exposure.variance[~good]))
    np.testing.assert_array_equal(exposure.plane("NO_DATA"), ~good)
    # Bleed trail (code 4) lands in SAT, together with saturated pixels (code 3).
    codes = raw["ood"]
    n_bleed = int(np.sum(codes == 4))
    assert n_bleed > 0
    sat = exposure.plane("SAT")
    assert int(np.sum(sat & (codes == 4))) == n_bleed
    np.testing.assert_array_equal(sat, (codes == 3) | (codes == 4))
    np.testing.assert_array_equal(exposure.plane("BAD"), codes == 1)


def test_decam_cp_wcs_and_metadata(decam):
    exposure, _ = decam
    assert exposure.wcs is not None
    assert exposure.wcs.has_celestial
    ny, nx = exposure.shape
    ra, dec = exposure.wcs.pixel_to_world_values((nx - 1) / 2, (ny - 1) / 2)
    assert abs(ra - 110.312) < 0.01
    assert abs(dec - 23.920) < 0.01
    assert not any(key.startswith(("CRVAL", "CTYPE", "PV1_")) for key in exposure.metadata)
    assert "GAINA" in exposure.metadata
    assert all(isinstance(v, bool | int | float | str) for v in exposure.metadata.values())


def test_decam_round_trip(decam, tmp_path):
    exposure, _ = decam
    back = read_exposure(write_exposure(tmp_path / "decam.fits", exposure))
    for name in ("image", "mask", "variance"):
        assert getattr(back, name).tobytes() == getattr(exposure, name).tobytes()
    assert back.mask_planes == exposure.mask_planes
    assert back.metadata == exposure.metadata
    y, x = np.mgrid[0:100:9, 0:101:9]
    np.testing.assert_allclose(back.wcs.pixel_to_world_values(x, y),
                               exposure.wcs.pixel_to_world_values(x, y), rtol=0, atol=1e-10)


def test_ztf_mask_bits_and_gain_variance(caplog):
    sci = ZTF / "ztf_20200924431759_000655_zr_c13_o_q3_sciimg_cut1024.fits"
    msk = ZTF / "ztf_20200924431759_000655_zr_c13_o_q3_mskimg_cut1024.fits.gz"
    with caplog.at_level(logging.WARNING, logger="psfmatch.io"):
        exposure = read_exposure(sci, mask=msk, mask_bits=ZTF_MASK_BITS)
    assert "estimated" in caplog.text
    assert "header GAIN" in caplog.text
    raw = raw_data(msk).astype(np.int64)
    planes_to_bits: dict[str, list[int]] = {}
    for bit, plane in ZTF_MASK_BITS.items():
        planes_to_bits.setdefault(plane, []).append(bit)
    for plane, bits in planes_to_bits.items():
        expected = np.zeros(raw.shape, dtype=bool)
        for bit in bits:
            expected |= (raw >> bit) & 1 != 0
        assert int(exposure.plane(plane).sum()) == int(expected.sum()), plane
    assert exposure.plane("DETECTED").sum() > 0
    assert exposure.plane("SAT").sum() == np.sum((raw >> 8) & 1)
    image = raw_data(sci).astype(np.float64)
    expected = np.maximum(image, 0.0) / 6.0 + (9.0 / 6.0) ** 2
    np.testing.assert_allclose(exposure.variance, expected, rtol=1e-6)
    assert exposure.wcs is not None
    ra, dec = exposure.wcs.pixel_to_world_values(511.5, 511.5)
    assert abs(ra - 57.997) < 0.01
    assert abs(dec - 35.747) < 0.01


def test_jwst_error_map():
    sci = JWST / f"{JWST_STEM}.fits"
    err_path = JWST / f"{JWST_STEM}.noise.fits"
    exposure = read_exposure(sci, error=err_path)
    err = raw_data(err_path).astype(np.float64)
    good = np.isfinite(err) & (err > 0)
    np.testing.assert_allclose(exposure.variance[good], err[good] ** 2, rtol=1e-6)
    np.testing.assert_array_equal(exposure.plane("NO_DATA"), ~good)
    assert exposure.wcs is not None
    ra, dec = exposure.wcs.pixel_to_world_values(449.5, 449.5)
    assert abs(ra - 3.5273) < 0.01
    assert abs(dec + 30.3650) < 0.01
