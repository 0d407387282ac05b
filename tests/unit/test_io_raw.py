"""Raw frames as users bring them: integer pixels, FITS scaling, saturation, mosaics.

Every file is written here with astropy (or byte by byte, for headers astropy would
refuse to write), and read back through :func:`psfmatch.io.read_exposure` /
:func:`psfmatch.io.open_exposure` (the pairs-sheet path of the ingest step).
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from psfmatch.errors import InputFileError, PairsSheetError
from psfmatch.io import read_exposure
from psfmatch.io.exposures import open_exposure
from psfmatch.io.sheets import read_pairs
from psfmatch.provenance import NOTE_CARDS, input_notes

SHAPE = (40, 50)


def raw_frame(seed: int = 1) -> np.ndarray:
    """Poisson counts around 1000 ADU with one pixel at 61000 (a saturated star core)."""
    data = np.random.default_rng(seed).poisson(1000.0, SHAPE).astype(np.uint16)
    data[7, 9] = 61000
    return data


def write_raw_bytes(path, data: np.ndarray, cards: dict) -> None:
    """``data`` (big-endian as FITS stores it) under a header holding ``cards`` verbatim."""
    header = fits.PrimaryHDU(data).header.copy()
    for key, value in cards.items():
        header[key] = value
    payload = data.astype(data.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(header.tostring().encode("ascii") + payload + b"\0" * (-len(payload) % 2880))


# ---------------------------------------------------------------------- integer pixels
def test_unsigned_16_bit_frame_reads_as_float32(tmp_path):
    data = raw_frame()
    fits.PrimaryHDU(data, header=fits.Header({"GAIN": 2.0})).writeto(tmp_path / "u16.fits")
    with fits.open(tmp_path / "u16.fits", do_not_scale_image_data=True) as hdul:
        stored = hdul[0]
        assert (stored.header["BITPIX"], stored.header["BZERO"]) == (16, 32768)
        assert stored.data.dtype.kind == "i"  # signed on disk, offset by BZERO
    exposure = read_exposure(tmp_path / "u16.fits")
    assert exposure.image.dtype == np.float32
    np.testing.assert_array_equal(exposure.image, data.astype(np.float32))
    # Poisson + read-noise variance from the gain (no RDNOISE: read noise 0)
    np.testing.assert_allclose(exposure.variance, data / 2.0, rtol=1e-6)


def test_bscale_bzero_scaling_is_applied(tmp_path):
    stored = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE) - 500
    write_raw_bytes(tmp_path / "scaled.fits", stored,
                    {"BSCALE": 0.25, "BZERO": 1000.0, "GAIN": 1.0, "BLANK": -500})
    exposure = read_exposure(tmp_path / "scaled.fits")
    expected = 1000.0 + 0.25 * stored.astype(np.float64)
    blank = stored == -500
    np.testing.assert_array_equal(exposure.image[~blank], expected[~blank].astype(np.float32))
    # BLANK pixels have no value: NaN, NO_DATA, infinite variance
    assert np.isnan(exposure.image[blank]).all()
    assert exposure.plane("NO_DATA")[blank].all()
    assert np.isinf(exposure.variance[blank]).all()
    assert exposure.plane("NO_DATA").sum() == 1


def test_signed_integer_frame_without_scaling(tmp_path):
    data = (np.arange(np.prod(SHAPE)) - 100).reshape(SHAPE).astype(np.int32)
    fits.PrimaryHDU(data).writeto(tmp_path / "i32.fits")
    exposure = read_exposure(tmp_path / "i32.fits", gain=1.0)
    np.testing.assert_array_equal(exposure.image, data.astype(np.float32))


@pytest.mark.parametrize(
    ("cards", "problem"),
    [
        ({"BZERO": "abc"}, r"BZERO = 'abc' is not a finite number"),
        ({"BSCALE": "two"}, r"BSCALE = 'two' is not a finite number"),
        ({"BSCALE": 0.0}, r"BSCALE = 0 maps every pixel to BZERO = 0"),
        ({"BZERO": 1.0e39}, r"BZERO = 1e\+39 and BSCALE = 1 put 16-bit integers beyond "
                            r"the float32 range"),
    ],
    ids=["bzero-text", "bscale-text", "bscale-zero", "bzero-overflow"],
)
def test_unusable_scaling_is_refused_by_name(tmp_path, cards, problem):
    write_raw_bytes(tmp_path / "broken.fits", np.ones(SHAPE, np.int16), {**cards, "GAIN": 1.0})
    with pytest.raises(InputFileError, match=r"broken\.fits \[HDU 0 'PRIMARY'\] holds integer "
                                             r"data \(BITPIX 16\) with an unusable scaling: "
                                             + problem):
        read_exposure(tmp_path / "broken.fits")


def test_float_data_ignores_scaling_checks(tmp_path):
    # BZERO/BSCALE only describe integer data; a float image is read as it is
    data = np.full(SHAPE, 5.0, np.float32)
    fits.PrimaryHDU(data, header=fits.Header({"GAIN": 1.0})).writeto(tmp_path / "f.fits")
    assert read_exposure(tmp_path / "f.fits").image.dtype == np.float32


# ---------------------------------------------------------------------- saturation
@pytest.mark.parametrize("card", ["SATURATE", "SATURATN"])
def test_header_saturation_flags_sat(tmp_path, card):
    data = raw_frame()
    header = fits.Header({"GAIN": 1.0, card: 60000.0})
    fits.PrimaryHDU(data, header=header).writeto(tmp_path / "sat.fits")
    exposure = open_exposure({"image": str(tmp_path / "sat.fits")}, {}, label="p science")
    sat = exposure.plane("SAT")
    np.testing.assert_array_equal(sat, data >= 60000)
    assert sat.sum() == 1
    assert exposure.image[7, 9] == 61000.0  # the value is kept, only flagged
    note = exposure.metadata[NOTE_CARDS["saturation"]]
    assert note == f"1 pixels >= 60000 (header {card}) flagged SAT"
    # a plain read (how every later step reads its inputs) does not re-flag
    assert not read_exposure(tmp_path / "sat.fits").plane("SAT").any()


def test_sheet_saturation_wins_over_the_header(tmp_path):
    data = raw_frame()
    header = fits.Header({"GAIN": 1.0, "SATURATE": 60000.0})
    fits.PrimaryHDU(data, header=header).writeto(tmp_path / "sat.fits")
    exposure = open_exposure({"image": str(tmp_path / "sat.fits")}, {"saturation": 1000.0},
                             label="p science")
    np.testing.assert_array_equal(exposure.plane("SAT"), data >= 1000)
    assert "(pairs sheet)" in exposure.metadata[NOTE_CARDS["saturation"]]


def test_afw_file_keeps_its_own_mask(tmp_path):
    # An afw MEF already says what is saturated: its SATURATE card is not applied again
    # (the simulated pairs carry one for the sky-subtracted level)...
    image = np.full(SHAPE, 100.0, np.float32)
    image[3, 4] = 5000.0
    hdus = fits.HDUList([fits.PrimaryHDU(header=fits.Header({"SATURATE": 1000.0})),
                         fits.ImageHDU(image, name="IMAGE"),
                         fits.ImageHDU(np.zeros(SHAPE, np.int32), name="MASK"),
                         fits.ImageHDU(np.ones(SHAPE, np.float32), name="VARIANCE")])
    hdus.writeto(tmp_path / "afw.fits")
    exposure = open_exposure({"image": str(tmp_path / "afw.fits")}, {}, label="p template")
    assert not exposure.plane("SAT").any()
    # ... unless the sheet gives a level
    exposure = open_exposure({"image": str(tmp_path / "afw.fits")}, {"saturation": 1000.0},
                             label="p template")
    assert exposure.plane("SAT").sum() == 1


# ---------------------------------------------------------------------- mosaics
def _mosaic(path):
    ccds = [fits.ImageHDU(raw_frame(seed).astype(np.float32), name=f"CCD{seed}")
            for seed in (1, 2)]
    for ccd in ccds:
        ccd.header["GAIN"] = 1.0
    fits.HDUList([fits.PrimaryHDU(), *ccds]).writeto(path)


@pytest.mark.parametrize("hdu", ["CCD2", "ccd2", 2])
def test_hdu_by_name_or_number(tmp_path, hdu):
    _mosaic(tmp_path / "mosaic.fits")
    exposure = open_exposure({"image": str(tmp_path / "mosaic.fits")}, {"hdu": hdu},
                             label="p science")
    np.testing.assert_array_equal(exposure.image, raw_frame(2).astype(np.float32))


def test_unknown_hdu_lists_the_hdus(tmp_path):
    _mosaic(tmp_path / "mosaic.fits")
    with pytest.raises(InputFileError,
                       match=r"pair 'p' science: image file .*mosaic\.fits has no HDU 'CCD9' "
                             r"\(HDUs: \['0:PRIMARY', '1:CCD1', '2:CCD2'\]\)"):
        open_exposure({"image": str(tmp_path / "mosaic.fits")}, {"hdu": "CCD9"},
                      label="pair 'p' science")


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_tile_compressed_file(tmp_path, dtype):
    data = raw_frame().astype(dtype)
    header = fits.Header({"GAIN": 1.0, "SATURATE": 60000.0})
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, header=header,
                                                       quantize_level=0.0)]
                 ).writeto(tmp_path / "frame.fits.fz")
    exposure = open_exposure({"image": str(tmp_path / "frame.fits.fz")}, {}, label="p")
    np.testing.assert_array_equal(exposure.image, data.astype(np.float32))  # lossless
    assert exposure.plane("SAT").sum() == 1


# ---------------------------------------------------------------------- provenance
def test_estimated_variance_is_recorded(tmp_path):
    header = fits.Header({"GAIN": 4.0, "RDNOISE": 8.0, "AVSKY": 3000.0})
    fits.PrimaryHDU(np.full(SHAPE, 10.0, np.float32), header=header).writeto(tmp_path / "s.fits")
    exposure = read_exposure(tmp_path / "s.fits")
    np.testing.assert_allclose(exposure.variance, 3010.0 / 4.0 + 4.0)
    note = exposure.metadata[NOTE_CARDS["variance"]]
    assert note == ("estimated from gain 4 e-/ADU (header GAIN), read noise 8 e- (header "
                    "RDNOISE); sky-subtracted image: adding back header AVSKY=3000")
    assert input_notes({"science": exposure.metadata, "template": {}}) == {
        "science": {"variance": note}}
    # a given map is not an estimate: nothing recorded
    fits.PrimaryHDU(np.ones(SHAPE, np.float32)).writeto(tmp_path / "v.fits")
    given = read_exposure(tmp_path / "s.fits", variance=tmp_path / "v.fits")
    assert NOTE_CARDS["variance"] not in given.metadata


def test_note_survives_the_afw_round_trip(tmp_path):
    from psfmatch.io import write_exposure

    fits.PrimaryHDU(raw_frame(), header=fits.Header({"GAIN": 2.0})).writeto(tmp_path / "r.fits")
    exposure = read_exposure(tmp_path / "r.fits")
    write_exposure(tmp_path / "afw.fits", exposure)
    again = read_exposure(tmp_path / "afw.fits")
    assert again.metadata[NOTE_CARDS["variance"]] == exposure.metadata[NOTE_CARDS["variance"]]


# ---------------------------------------------------------------------- pairs sheet
def test_sheet_hdu_and_saturation_columns(tmp_path):
    import yaml
    from tests.snakemake_run import REPO

    schema = yaml.safe_load((REPO / "workflow/schemas/pairs.schema.yaml").read_text())
    for name in ("t.fits", "s.fits"):
        (tmp_path / name).write_bytes(b"")
    sheet = tmp_path / "pairs.tsv"
    sheet.write_text("pair\ttemplate\tscience\ttemplate_hdu\tscience_hdu\tscience_saturation\n"
                     "a\tt.fits\ts.fits\t3\tN4\t42000\n")
    row = read_pairs(sheet, schema=schema, base_dir=tmp_path)["a"]
    assert (row["template_hdu"], row["science_hdu"], row["science_saturation"]) == (3, "N4",
                                                                                    42000.0)
    sheet.write_text("pair\ttemplate\tscience\tscience_saturation\na\tt.fits\ts.fits\thigh\n")
    with pytest.raises(PairsSheetError, match=r"line 2, column 'science_saturation': expected "
                                              r"a number, got 'high'"):
        read_pairs(sheet, schema=schema, base_dir=tmp_path)
