"""Tests of psfmatch.io on synthetic files written under tmp_path."""

from __future__ import annotations

import gzip
import logging

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from psfmatch.errors import ConfigError, ExposureError, InputFileError
from psfmatch.exposure import DEFAULT_MASK_PLANES, Exposure
from psfmatch.io import (
    DECAM_CP_MASK_VALUES,
    ZTF_MASK_BITS,
    read_exposure,
    read_json,
    read_table,
    write_exposure,
    write_json,
    write_table,
)
from psfmatch.psf import ImagePsf

SHAPE = (30, 40)


def make_wcs() -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.1, 2.2]
    wcs.wcs.crpix = [20.5, 15.5]
    wcs.wcs.cd = [[-7.3e-5, 1.1e-6], [0.9e-6, 7.3e-5]]
    return wcs


def make_exposure(**changes) -> Exposure:
    rng = np.random.default_rng(42)
    image = rng.normal(100.0, 5.0, SHAPE).astype(np.float32)
    planes = dict(DEFAULT_MASK_PLANES, STREAK=17, INJECTED=30)
    mask = np.zeros(SHAPE, dtype=np.int32)
    mask[3, 4] = 1 << 30
    mask[5, 6] = (1 << 17) | (1 << 1)
    mask[7, :] = 1 << 8
    variance = rng.uniform(20.0, 30.0, SHAPE).astype(np.float32)
    variance[0, 0] = np.inf
    fields = {
        "image": image,
        "mask": mask,
        "variance": variance,
        "mask_planes": planes,
        "wcs": make_wcs(),
        "metadata": {"FILTER": "r", "EXPTIME": 30.0, "VISIT": 1234, "FLAG": True,
                     "A_LONG_KEYWORD_NAME": "hierarch"},
        "xy0": (100, -7),
        "psf": ImagePsf(np.outer([1.0, 2.0, 4.0, 2.0, 1.0], [1.0, 3.0, 1.0])),
    }
    fields.update(changes)
    return Exposure(**fields)


def assert_same_wcs(a: WCS, b: WCS) -> None:
    y, x = np.mgrid[0 : SHAPE[0] : 3, 0 : SHAPE[1] : 3]
    ra_a, dec_a = a.pixel_to_world_values(x, y)
    ra_b, dec_b = b.pixel_to_world_values(x, y)
    np.testing.assert_allclose(ra_a, ra_b, rtol=0, atol=1e-10)
    np.testing.assert_allclose(dec_a, dec_b, rtol=0, atol=1e-10)


def write_single(path, data, header=None):
    fits.PrimaryHDU(data=data, header=header).writeto(path)
    return path


# ---------------------------------------------------------------------- afw round trip
def test_round_trip_is_lossless(tmp_path):
    exposure = make_exposure()
    path = write_exposure(tmp_path / "calexp.fits", exposure)
    back = read_exposure(path)
    for name in ("image", "mask", "variance"):
        got, want = getattr(back, name), getattr(exposure, name)
        assert got.dtype == want.dtype
        assert got.tobytes() == want.tobytes(), name
    assert back.mask_planes == exposure.mask_planes
    assert back.xy0 == (100, -7)
    assert back.metadata == exposure.metadata
    assert_same_wcs(back.wcs, exposure.wcs)
    assert isinstance(back.psf, ImagePsf)
    np.testing.assert_allclose(back.psf.image, exposure.psf.image, rtol=1e-15)
    assert back.psf.fwhm == pytest.approx(exposure.psf.fwhm)
    assert [p.name for p in tmp_path.iterdir()] == ["calexp.fits"]


def test_round_trip_layout_follows_afw(tmp_path):
    path = write_exposure(tmp_path / "calexp.fits.gz", make_exposure())
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "IMAGE", "MASK", "VARIANCE", "PSF"]
        assert hdul[0].data is None
        assert hdul["IMAGE"].data.dtype == np.dtype(">f4")
        assert hdul["MASK"].data.dtype == np.dtype(">i4")
        assert hdul["VARIANCE"].data.dtype == np.dtype(">f4")
        assert hdul["MASK"].header["MP_STREAK"] == 17
        assert hdul["MASK"].header["MP_DETECTED_NEGATIVE"] == 6
        assert hdul["IMAGE"].header["LTV1"] == -100
        assert hdul["IMAGE"].header["LTV2"] == 7
        assert hdul[0].header["FILTER"] == "r"
    with gzip.open(path) as handle:  # .gz suffix really compresses
        assert handle.read(6) == b"SIMPLE"


def test_round_trip_without_wcs_psf_or_metadata(tmp_path):
    exposure = Exposure(np.zeros(SHAPE, np.float32), np.zeros(SHAPE, np.int32), np.ones(SHAPE))
    back = read_exposure(write_exposure(tmp_path / "plain.fits", exposure))
    assert back.wcs is None
    assert back.psf is None
    assert back.metadata == {}
    assert back.xy0 == (0, 0)
    assert back.mask_planes == DEFAULT_MASK_PLANES


def test_overwrite_false_refuses(tmp_path):
    path = write_exposure(tmp_path / "e.fits", make_exposure())
    with pytest.raises(FileExistsError, match="e.fits"):
        write_exposure(path, make_exposure(), overwrite=False)


def test_failed_write_leaves_nothing(tmp_path):
    bad = make_exposure(metadata={"BAD": float("nan")})
    with pytest.raises(ExposureError, match="BAD"):
        write_exposure(tmp_path / "e.fits", bad)
    assert list(tmp_path.iterdir()) == []


def test_hand_written_lsst_calexp_reads(tmp_path):
    wcs = make_wcs()
    primary = fits.PrimaryHDU()
    primary.header["FILTER"] = "i"
    primary.header["HIERARCH LSST ISR GAIN"] = 1.7
    hdus = [primary]
    image = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    mask = np.zeros(SHAPE, dtype=np.int32)
    mask[1, 2] = 1 << 12  # STREAK at an unusual bit
    mask[2, 3] = 1 << 0
    variance = np.full(SHAPE, 4.0, dtype=np.float32)
    for name, data in (("IMAGE", image), ("MASK", mask), ("VARIANCE", variance)):
        header = wcs.to_header()
        header["EXTTYPE"] = name
        header["INHERIT"] = True
        header["LTV1"] = -5
        header["LTV2"] = -9
        if name == "MASK":
            for plane, bit in {"BAD": 0, "SAT": 1, "NO_DATA": 8, "STREAK": 12}.items():
                header[f"HIERARCH MP_{plane}"] = bit
        hdus.append(fits.ImageHDU(data, header=header, name=name))
    path = tmp_path / "calexp_lsst.fits"
    fits.HDUList(hdus).writeto(path)
    exposure = read_exposure(path)
    assert exposure.mask_planes == {"BAD": 0, "SAT": 1, "NO_DATA": 8, "STREAK": 12}
    assert exposure.plane("STREAK")[1, 2]
    assert exposure.plane("STREAK").sum() == 1
    assert exposure.plane("BAD").sum() == 1
    assert exposure.xy0 == (5, 9)
    np.testing.assert_array_equal(exposure.image, image)
    np.testing.assert_array_equal(exposure.variance, variance)
    assert exposure.metadata == {"FILTER": "i", "LSST ISR GAIN": 1.7}
    assert_same_wcs(exposure.wcs, wcs)


def test_afw_missing_mask_and_variance(tmp_path, caplog):
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(np.full(SHAPE, 50.0, np.float32), name="IMAGE")]
    path = tmp_path / "bare.fits"
    fits.HDUList(hdus).writeto(path)
    with caplog.at_level(logging.WARNING, logger="psfmatch.io"):
        exposure = read_exposure(path, gain=2.0)
    assert exposure.mask_planes == DEFAULT_MASK_PLANES
    assert not exposure.mask.any()
    np.testing.assert_allclose(exposure.variance, 25.0)
    assert "estimated" in caplog.text


def test_nan_pixels_flagged_no_data(tmp_path):
    image = np.ones(SHAPE, np.float32)
    image[4, 5] = np.nan
    path = write_single(tmp_path / "nan.fits", image)
    variance = write_single(tmp_path / "var.fits", np.ones(SHAPE, np.float32))
    exposure = read_exposure(path, variance=variance)
    assert np.isnan(exposure.image[4, 5])
    assert exposure.plane("NO_DATA")[4, 5]
    assert exposure.plane("NO_DATA").sum() == 1


# ---------------------------------------------------------------------- single HDU
def test_single_hdu_with_weight(tmp_path):
    image = np.ones(SHAPE, np.float32)
    weight = np.full(SHAPE, 0.25, np.float32)
    weight[0, :3] = [0.0, -1.0, np.nan]
    header = make_wcs().to_header()
    header["GAIN"] = 3.0
    path = write_single(tmp_path / "img.fits", image, header)
    wpath = write_single(tmp_path / "wt.fits", weight)
    exposure = read_exposure(path, weight=wpath)
    np.testing.assert_array_equal(exposure.variance[1:], 4.0)
    assert np.all(np.isinf(exposure.variance[0, :3]))
    no_data = exposure.plane("NO_DATA")
    assert no_data[0, :3].all()
    assert no_data.sum() == 3
    assert exposure.metadata == {"GAIN": 3.0}
    assert exposure.wcs is not None


def test_single_hdu_with_error_and_variance(tmp_path):
    image = write_single(tmp_path / "img.fits", np.ones(SHAPE, np.float32))
    err = np.full(SHAPE, 3.0, np.float32)
    err[2, 2] = 0.0
    epath = write_single(tmp_path / "err.fits", err)
    exposure = read_exposure(image, error=epath)
    assert exposure.variance[0, 0] == 9.0
    assert np.isinf(exposure.variance[2, 2])
    assert exposure.plane("NO_DATA").sum() == 1
    vpath = write_single(tmp_path / "var.fits", np.full(SHAPE, 7.0, np.float64))
    exposure = read_exposure(image, variance=vpath)
    np.testing.assert_array_equal(exposure.variance, 7.0)
    assert not exposure.mask.any()


def test_only_one_variance_kind(tmp_path):
    image = write_single(tmp_path / "img.fits", np.ones(SHAPE, np.float32))
    with pytest.raises(ConfigError, match="error.*weight"):
        read_exposure(image, weight=image, error=image)


def test_mask_bits_and_values(tmp_path, caplog):
    image = write_single(tmp_path / "img.fits", np.ones(SHAPE, np.float32))
    var = write_single(tmp_path / "var.fits", np.ones(SHAPE, np.float32))
    raw = np.zeros(SHAPE, np.int16)
    raw[0, 0] = 1 << 8  # SAT
    raw[0, 1] = (1 << 2) | (1 << 9)  # BAD twice
    raw[0, 2] = 1 << 0  # STREAK (new plane)
    raw[0, 3] = 1 << 14  # reserved: unmapped
    mpath = write_single(tmp_path / "msk.fits", raw)
    with caplog.at_level(logging.WARNING, logger="psfmatch.io"):
        exposure = read_exposure(image, variance=var, mask=mpath, mask_bits=ZTF_MASK_BITS)
    assert exposure.plane("SAT").sum() == 1
    assert exposure.plane("BAD").sum() == 1
    assert exposure.plane("STREAK")[0, 2]
    assert exposure.mask[0, 3] == 0
    assert "unmapped bits [14]" in caplog.text
    codes = np.zeros(SHAPE, np.int32)
    codes[1, :5] = [1, 2, 3, 4, 5]
    codes[1, 5] = 99
    cpath = write_single(tmp_path / "ood.fits", codes)
    exposure = read_exposure(image, variance=var, mask=cpath, mask_values=DECAM_CP_MASK_VALUES)
    assert exposure.plane("SAT")[1].sum() == 2
    assert exposure.plane("NO_DATA")[1, 1]
    assert exposure.plane("CR")[1, 4]
    assert exposure.mask[1, 5] == 0
    exposure = read_exposure(image, variance=var, mask=cpath)
    assert exposure.plane("BAD").sum() == 6


def test_gain_variance_estimate(tmp_path, caplog):
    header = fits.Header({"GAIN": 4.0, "RDNOISE": 8.0})
    path = write_single(tmp_path / "img.fits", np.full(SHAPE, 100.0, np.float32), header)
    with caplog.at_level(logging.WARNING, logger="psfmatch.io"):
        exposure = read_exposure(path)
    np.testing.assert_allclose(exposure.variance, 100.0 / 4.0 + (8.0 / 4.0) ** 2)
    assert "variance" in caplog.text
    assert "estimated" in caplog.text
    assert "GAIN" in caplog.text
    # Sky-subtracted image: header AVSKY is added back.
    header = fits.Header({"GAIN": 2.0, "AVSKY": 1000.0})
    path = write_single(tmp_path / "sub.fits", np.full(SHAPE, 10.0, np.float32), header)
    exposure = read_exposure(path, read_noise=0.0)
    np.testing.assert_allclose(exposure.variance, 1010.0 / 2.0)
    exposure = read_exposure(path, gain=5.0, read_noise=5.0)
    np.testing.assert_allclose(exposure.variance, 1010.0 / 5.0 + 1.0)


def test_no_gain_is_an_error(tmp_path):
    path = write_single(tmp_path / "nogain.fits", np.ones(SHAPE, np.float32))
    with pytest.raises(InputFileError, match=r"nogain\.fits.*gain="):
        read_exposure(path)


def test_hdu_selection_and_primary_metadata(tmp_path):
    primary = fits.PrimaryHDU()
    primary.header["OBSID"] = "abc"
    ext = fits.ImageHDU(np.ones(SHAPE, np.float32), name="S4")
    ext.header["GAIN"] = 1.0
    path = tmp_path / "mef.fits"
    fits.HDUList([primary, ext]).writeto(path)
    exposure = read_exposure(path, hdu="S4")
    # the header cards, plus ingest's record that the variance was estimated
    note = exposure.metadata.pop("PSFMATCH VARIANCE")
    assert exposure.metadata == {"OBSID": "abc", "GAIN": 1.0}
    assert note.startswith("estimated from gain 1 e-/ADU (header GAIN)")
    with pytest.raises(InputFileError, match=r"mef\.fits.*'IMAGE'"):
        read_exposure(path, hdu="IMAGE")


# ---------------------------------------------------------------------- error branches
def test_missing_file(tmp_path):
    with pytest.raises(InputFileError, match=r"nothere\.fits.*does not exist"):
        read_exposure(tmp_path / "nothere.fits")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.fits"
    path.touch()
    with pytest.raises(InputFileError, match=r"empty\.fits.*empty"):
        read_exposure(path)


def test_not_fits(tmp_path):
    path = tmp_path / "text.fits"
    path.write_text("this is not a FITS file\n" * 200)
    with pytest.raises(InputFileError, match=r"text\.fits.*cannot be read as FITS"):
        read_exposure(path)


def test_truncated_mid_hdu(tmp_path):
    path = write_exposure(tmp_path / "full.fits", make_exposure())
    data = path.read_bytes()
    cut = tmp_path / "cut.fits"
    for size in (2880 * 3 + 1000, 2880 + 50, len(data) - 100):  # in data, in a header, at end
        cut.write_bytes(data[:size])
        with pytest.raises(InputFileError, match=r"cut\.fits is truncated or corrupt"):
            read_exposure(cut)


def test_gzip_corrupt(tmp_path):
    blob = gzip.compress(write_exposure(tmp_path / "x.fits", make_exposure()).read_bytes())
    path = tmp_path / "bad.fits.gz"
    path.write_bytes(blob[:20] + b"\x00garbage" * 50 + blob[-50:])
    with pytest.raises(InputFileError, match=r"bad\.fits\.gz is a corrupt gzip"):
        read_exposure(path)
    half = tmp_path / "half.fits.gz"
    half.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InputFileError, match=r"half\.fits\.gz is a corrupt gzip"):
        read_exposure(half)


def test_integer_image(tmp_path):
    # Raw integer pixels are read as float32 (tests/unit/test_io_raw.py: BZERO/BSCALE).
    path = write_single(tmp_path / "int.fits", np.arange(np.prod(SHAPE), dtype=np.int16)
                        .reshape(SHAPE))
    exposure = read_exposure(path, gain=1.0)
    assert exposure.image.dtype == np.float32
    np.testing.assert_array_equal(exposure.image, np.arange(np.prod(SHAPE)).reshape(SHAPE))


@pytest.mark.parametrize("shape", [(5, 6, 7), (12,)])
def test_not_2d_image(tmp_path, shape):
    path = write_single(tmp_path / "cube.fits", np.ones(shape, np.float32))
    with pytest.raises(InputFileError, match=rf"cube\.fits.*HDU 0 'PRIMARY'.*{len(shape)}-D"):
        read_exposure(path, gain=1.0)


def test_no_image_data(tmp_path):
    path = tmp_path / "header_only.fits"
    fits.PrimaryHDU().writeto(path)
    with pytest.raises(InputFileError, match=r"header_only\.fits.*no HDU with image data"):
        read_exposure(path)


def test_shape_mismatch(tmp_path):
    image = write_single(tmp_path / "img.fits", np.ones(SHAPE, np.float32))
    var = write_single(tmp_path / "small_var.fits", np.ones((3, 4), np.float32))
    with pytest.raises(ExposureError, match=r"small_var\.fits.*\(3, 4\).*img\.fits"):
        read_exposure(image, variance=var)
    bad = fits.HDUList([
        fits.PrimaryHDU(),
        fits.ImageHDU(np.ones(SHAPE, np.float32), name="IMAGE"),
        fits.ImageHDU(np.ones((3, 4), np.int32), name="MASK"),
    ])
    bad.writeto(tmp_path / "afw_bad.fits")
    with pytest.raises(ExposureError, match=r"afw_bad\.fits.*'MASK'"):
        read_exposure(tmp_path / "afw_bad.fits", gain=1.0)


# ---------------------------------------------------------------------- PSF
def test_image_psf():
    psf = ImagePsf(np.full((5, 5), 2.0))
    assert psf.image.sum() == pytest.approx(1.0)
    assert psf.image_at(10.0, 20.0) is psf.image
    y, x = np.mgrid[-10:11, -10:11]
    sigma = 2.0
    gauss = ImagePsf(np.exp(-(x**2 + y**2) / (2 * sigma**2)))
    assert gauss.fwhm == pytest.approx(2.3548 * sigma, rel=1e-3)
    with pytest.raises(ExposureError, match="odd"):
        ImagePsf(np.ones((4, 5)))
    with pytest.raises(ExposureError, match="sum"):
        ImagePsf(np.zeros((3, 3)))


# ---------------------------------------------------------------------- tables, JSON
def test_table_round_trip(tmp_path):
    cols = {"x": np.arange(5, dtype=np.float64), "flux": np.linspace(1, 2, 5).astype(np.float32),
            "id": np.arange(5, dtype=np.int64), "name": np.array(list("abcde"))}
    meta = {"step": "detect", "config": {"threshold": np.float32(5.0), "planes": ("BAD", "SAT")}}
    path = write_table(tmp_path / "t.parquet", cols, units={"x": "pix", "flux": "adu"},
                       metadata=meta)
    columns, units, metadata = read_table(path)
    for key, value in cols.items():
        np.testing.assert_array_equal(columns[key], value)
    assert columns["flux"].dtype == np.float32
    assert units == {"x": "pix", "flux": "adu"}
    assert metadata == {"step": "detect", "config": {"threshold": 5.0, "planes": ["BAD", "SAT"]}}
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_table_errors(tmp_path):
    with pytest.raises(ValueError, match="equal length"):
        write_table(tmp_path / "t.parquet", {"a": np.ones(3), "b": np.ones(4)})
    with pytest.raises(ValueError, match="unknown columns"):
        write_table(tmp_path / "t.parquet", {"a": np.ones(3)}, units={"b": "m"})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputFileError, match=r"nope\.parquet"):
        read_table(tmp_path / "nope.parquet")


def test_json_round_trip(tmp_path):
    obj = {"b": np.int64(3), "a": np.arange(3), "c": {"z": np.float32(0.5), "y": [True]}}
    path = write_json(tmp_path / "m.json", obj)
    assert read_json(path) == {"a": [0, 1, 2], "b": 3, "c": {"y": [True], "z": 0.5}}
    text = path.read_text()
    assert text.index('"a"') < text.index('"b"')
    assert '\n  "a"' in text
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputFileError, match=r"bad\.json"):
        read_json(tmp_path / "bad.json")
