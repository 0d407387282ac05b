"""psfmatch's own FITS files without astropy: same bytes written, same values read.

The numpy-only reader and writer (:mod:`psfmatch.io._lite`, :mod:`psfmatch.io._afw`)
stand in for astropy on the files psfmatch writes. Each test compares them with
astropy itself: the card text, the written bytes, the values read back.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import psfmatch
from psfmatch import io
from psfmatch.io._afw import read_afw
from psfmatch.io._cards import format_card, parse_cards
from psfmatch.io._lite import LiteUnsupportedError, scan
from psfmatch.io._wcs import HeaderWcs
from psfmatch.io.exposures import _read_any, _write_astropy
from psfmatch.io.headers import read_image_shape
from psfmatch.kernel import SpatialKernel
from psfmatch.spatial import SpatialFunction

sys.path.insert(0, str(Path(__file__).parent))
from test_io import assert_same_wcs, make_exposure  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

VALUES = [True, False, 0, -1, 7, 2**40, -(2**62), np.int64(5), np.int32(-3), 1.0, -0.0, 0.1 + 0.2,
          1e-5, 1.5e-300, 6.02214076e23, 1e20, 123456789.123456789, np.float64(1.0945062537483679),
          np.float32(1.1), "", "r", "a'quote", "  leading", "x" * 68, "PHYSICAL", "with space"]


@pytest.mark.parametrize("value", VALUES, ids=[repr(v) for v in VALUES])
@pytest.mark.parametrize("key", ["KEY", "HIERARCH A_LONG_KEYWORD", "HIERARCH MP_NO_DATA"])
def test_cards_are_formatted_as_astropy_formats_them(key, value):
    assert format_card(key, value) == fits.Card(key, value).image
    with warnings.catch_warnings():  # astropy truncates a comment that does not fit
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        assert format_card(key, value, "a comment") == fits.Card(key, value, "a comment").image


def test_cards_that_do_not_fit_one_line_are_handed_to_astropy():
    long = "text " * 40  # 200 characters: CONTINUE cards
    assert format_card("NOTE", long) == fits.Card("NOTE", long).image
    assert len(format_card("NOTE", long)) == 4 * 80


def test_parsed_cards_have_the_values_and_types_astropy_reads():
    header = fits.Header()
    for i, value in enumerate(VALUES):
        header[f"K{i}"] = value
        header[f"HIERARCH LONG_NAME_{i}"] = value
    header["NOTE"] = "a long note " * 20
    header["COMMENT"] = "commentary"
    header["BLANKV"] = None
    raw = header.tostring().encode("ascii")
    parsed = {c.key: c.value for c in parse_cards(raw) if c.value is not None}
    expected = {k: v for k, v in fits.Header.fromstring(raw.decode()).items()
                if k != "COMMENT" and v is not None and not isinstance(v, fits.card.Undefined)}
    assert parsed == expected
    assert {k: type(v) for k, v in parsed.items()} == {k: type(v) for k, v in expected.items()}


# ---------------------------------------------------------------------- exposures
def _exposures():
    wcs = make_exposure().wcs
    yield "full", make_exposure()
    yield "no wcs, no psf", make_exposure(wcs=None, psf=None, xy0=(0, 0))
    yield "header wcs", make_exposure(wcs=HeaderWcs(
        [c.image for c in wcs.to_header(relax=True).cards], "test"))
    yield "odd metadata", make_exposure(metadata={
        "F": 1e-5, "BIG": 2**40, "NOTE": "long text " * 15, "Q": "it's", "EMPTY": "",
        "mixedCase_key": 3.25, "EQUINOX": 2000.0})


@pytest.mark.parametrize(("name", "exposure"), list(_exposures()), ids=[n for n, _ in _exposures()])
def test_exposures_are_written_byte_for_byte_as_astropy_writes_them(tmp_path, name, exposure):
    lite = io.write_exposure(tmp_path / "lite.fits", exposure)
    psf = None if exposure.psf is None else np.asarray(exposure.psf.image, dtype=np.float64)
    reference = _write_astropy(tmp_path / "astropy.fits", exposure, psf)
    assert lite.read_bytes() == reference.read_bytes()


@pytest.mark.parametrize(("name", "exposure"), list(_exposures()), ids=[n for n, _ in _exposures()])
def test_exposures_read_without_astropy_equal_the_astropy_reading(tmp_path, name, exposure):
    path = io.write_exposure(tmp_path / "e.fits", exposure.with_(
        image=np.where(np.arange(exposure.image.size).reshape(exposure.shape) == 7, np.nan,
                       exposure.image)))  # one NaN pixel: flagged NO_DATA by both readers
    lite = read_afw(path)
    ref = _read_any(path, given={}, mask=None, mask_bits=None, mask_values=None, gain=None,
                    read_noise=None, hdu=None, layout="auto", saturation=None)
    for field in ("image", "mask", "variance"):
        a, b = getattr(lite, field), getattr(ref, field)
        assert a.dtype == b.dtype
        assert a.tobytes() == b.tobytes()
    assert lite.mask_planes == ref.mask_planes
    assert lite.metadata == ref.metadata
    assert {k: type(v) for k, v in lite.metadata.items()} == \
        {k: type(v) for k, v in ref.metadata.items()}
    assert lite.xy0 == ref.xy0
    assert (lite.psf is None) == (ref.psf is None)
    if ref.psf is not None:
        assert np.array_equal(lite.psf.image, ref.psf.image)
    assert (lite.wcs is None) == (ref.wcs is None)
    if ref.wcs is not None:
        assert isinstance(lite.wcs, HeaderWcs)
        assert_same_wcs(lite.wcs, ref.wcs)


def test_foreign_layouts_are_left_to_astropy(tmp_path):
    path = io.write_exposure(tmp_path / "e.fits", make_exposure())
    with fits.open(path) as hdul:  # one more card than psfmatch writes
        hdul["IMAGE"].header["BUNIT"] = "adu"
        hdul.writeto(tmp_path / "other.fits")
    with pytest.raises(LiteUnsupportedError):
        read_afw(tmp_path / "other.fits")
    assert io.read_exposure(tmp_path / "other.fits").metadata["BUNIT"] == "adu"  # astropy's
    fits.PrimaryHDU(np.ones((4, 5), np.uint16)).writeto(tmp_path / "scaled.fits")  # BZERO
    with pytest.raises(LiteUnsupportedError):
        scan(tmp_path / "scaled.fits")


def test_an_unchanged_exposure_is_copied_and_a_changed_one_written(tmp_path):
    source = io.write_exposure(tmp_path / "in.fits", make_exposure())
    exposure = io.read_exposure(source)
    copied = io.write_exposure(tmp_path / "copy.fits", exposure, same_as=source)
    assert copied.read_bytes() == source.read_bytes()
    changed = exposure.with_(image=exposure.image + np.float32(1.0))
    written = io.write_exposure(tmp_path / "new.fits", changed, same_as=source)
    assert np.array_equal(io.read_exposure(written).image, changed.image)


def test_a_header_wcs_is_parsed_only_when_used(tmp_path):
    exposure = make_exposure()
    read = io.read_exposure(io.write_exposure(tmp_path / "e.fits", exposure))
    assert read.wcs._parsed is None
    assert_same_wcs(read.wcs, exposure.wcs)
    assert read.wcs._parsed is not None


# ---------------------------------------------------------------------- other files
def _kernel(with_covariance: bool, background: int) -> SpatialKernel:
    rng = np.random.default_rng(3)
    func = SpatialFunction(1, "chebyshev1", (0, 0, 99, 79))
    bg = SpatialFunction(background, "chebyshev1", (0, 0, 99, 79)) if background >= 0 else None
    n_bg = 0 if bg is None else bg.n_terms
    n = 3 * func.n_terms + n_bg
    return SpatialKernel(basis=rng.normal(size=(3, 5, 5)),
                         coefficients=rng.normal(size=(3, func.n_terms)),
                         kernel_function=func, background_coefficients=rng.normal(size=n_bg),
                         background_function=bg, metadata={"step": "x", "v": [1, 2.5]},
                         covariance=np.eye(n) if with_covariance else None)


def _kernel_astropy(path: Path, kernel: SpatialKernel) -> Path:
    """kernel.fits as the astropy writer wrote it (the reference for the bytes)."""
    from psfmatch.io.kernels import _metadata_text

    primary = fits.PrimaryHDU()
    h = primary.header
    func, bg = kernel.kernel_function, kernel.background_function
    h["KSIZE"] = (kernel.kernel_size, "kernel width = height (px)")
    h["NBASIS"] = (int(kernel.basis.shape[0]), "number of basis kernels")
    h["KSUM"] = (kernel.kernel_sum, "kernel sum at the bbox centre")
    h["SPMODEL"] = (func.model_type, "spatial function family")
    h["SPORDER"] = (func.order, "spatial order of the kernel coefficients")
    for key, value in zip(("BBOX_X0", "BBOX_Y0", "BBOX_X1", "BBOX_Y1"), func.bbox, strict=True):
        h[key] = (value, "inclusive parent bbox of the spatial model")
    h["BGMODEL"] = (bg.model_type if bg is not None else "none", "background family")
    h["BGORDER"] = (bg.order if bg is not None else -1, "background order (-1: none)")
    text = _metadata_text(kernel.metadata)
    column = fits.Column(name="json", format=f"{max(len(text), 1)}A", array=np.array([text]))
    hdus = [primary, fits.ImageHDU(kernel.basis, name="BASIS"),
            fits.ImageHDU(kernel.coefficients, name="COEFFS"),
            fits.ImageHDU(np.asarray(kernel.background_coefficients, np.float64),
                          name="BACKGROUND"),
            fits.BinTableHDU.from_columns([column], name="METADATA")]
    if kernel.covariance is not None:
        hdus.append(fits.ImageHDU(kernel.covariance, name="COVARIANCE"))
    fits.HDUList(hdus).writeto(path)
    return path


@pytest.mark.parametrize(("with_covariance", "background"), [(False, 2), (True, 1), (False, -1)])
def test_kernel_files_are_written_as_astropy_writes_them(tmp_path, with_covariance, background):
    kernel = _kernel(with_covariance, background)
    lite = io.write_kernel(tmp_path / "lite.fits", kernel)
    assert lite.read_bytes() == _kernel_astropy(tmp_path / "ref.fits", kernel).read_bytes()
    back = io.read_kernel(lite)
    assert np.array_equal(back.coefficients, kernel.coefficients)
    assert back.metadata == kernel.metadata
    assert np.array_equal(back.background_coefficients, kernel.background_coefficients)


def test_array_files_and_psf_images_are_written_as_astropy_writes_them(tmp_path):
    arrays = {"T_IMAGE": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
              "IDS": np.array([3, 9], dtype=np.int64), "EMPTY": np.zeros((0, 4))}
    lite = io.write_arrays(tmp_path / "lite.fits", arrays, metadata={"a": 1})
    column = fits.Column(name="json", format="8A", array=np.array(['{"a": 1}']))
    fits.HDUList([fits.PrimaryHDU(), *(fits.ImageHDU(v, name=k) for k, v in arrays.items()),
                  fits.BinTableHDU.from_columns([column], name="METADATA")]
                 ).writeto(tmp_path / "ref.fits")
    assert lite.read_bytes() == (tmp_path / "ref.fits").read_bytes()
    back, meta = io.read_arrays(lite)
    assert meta == {"a": 1}
    assert all(np.array_equal(back[k], v) for k, v in arrays.items())
    psf = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0])
    io.write_psf_image(tmp_path / "psf.fits", psf, metadata={"PSFSRC": "model", "PSFFWHM": 2.5})
    hdu = fits.ImageHDU(psf, name="PSF")
    hdu.header["PSFSRC"], hdu.header["PSFFWHM"] = "model", 2.5
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp_path / "psf_ref.fits")
    assert (tmp_path / "psf.fits").read_bytes() == (tmp_path / "psf_ref.fits").read_bytes()
    assert np.allclose(io.read_psf_model(tmp_path / "psf.fits").image, psf / psf.sum())


def test_image_shapes_from_headers_match_astropy(tmp_path):
    afw = io.write_exposure(tmp_path / "e.fits", make_exposure())
    single = tmp_path / "single.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((6, 9), np.float32))]).writeto(single)
    compressed = tmp_path / "tile.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(np.zeros((8, 11), np.float32))]) \
        .writeto(compressed)
    for path, shape in ((afw, (30, 40)), (single, (6, 9)), (compressed, (8, 11))):
        assert read_image_shape(path) == shape


def test_jobs_that_only_read_and_write_psfmatch_files_do_not_import_astropy(tmp_path):
    path = io.write_exposure(tmp_path / "e.fits", make_exposure())
    io.write_kernel(tmp_path / "k.fits", _kernel(True, 2))
    code = (f"from psfmatch import io\ne = io.read_exposure({str(path)!r})\n"
            f"io.write_exposure({str(tmp_path / 'f.fits')!r}, e)\n"
            f"io.read_kernel({str(tmp_path / 'k.fits')!r})\n"
            "io.write_table(" + repr(str(tmp_path / "t.parquet")) + ", {'a': [1]})\n"
            "import sys\nprint(sorted(m for m in sys.modules if m.startswith('astropy')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(REPO / "src")})
    assert run.stdout.strip() == "[]"


def test_the_static_version_is_the_project_version():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert psfmatch.__version__ == project["version"]
