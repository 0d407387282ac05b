"""Bad inputs cost one pair, with a message a person understands.

One ``snakemake --keep-going`` run processes a good pair (stored under a path full of
spaces, quotes and shell metacharacters, with a patch of NaN and negative variance) and
one bad pair per row of :data:`BAD_PAIRS`. Each row checks that its pair's job failed in
the expected rule, that the log names the pair, the file (or HDU/config key) and what is
wrong, that the failed job left no output and no temporary file, and the good pair's
test checks that it finished normally. Config-level mistakes (which concern every pair)
must stop the run before any job: those rows run ``snakemake -n``.
"""

from __future__ import annotations

import gzip
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits
from tests.snakemake_run import run_snakemake

from psfmatch import io, synth
from psfmatch.exposure import Exposure

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.workflow, pytest.mark.slow]

# Folder and file names a shell would mangle: the workflow never goes through a shell.
WEIRD_DIR = "in put's \"dir\" $(echo no);&|"
GOOD_SIM = {"seed": 3, "shape": (512, 512), "star_density": 6000.0, "flux_min": 2000.0}
SMALL_SIM = {"seed": 11, "shape": (256, 256), "star_density": 6000.0, "flux_min": 2000.0}
NAN_PATCH = (slice(40, 60), slice(300, 330))   # science variance NaN here
NEG_PATCH = (slice(400, 420), slice(100, 110))  # science variance -1 here


@dataclass(frozen=True)
class Bad:
    """One bad pair: which rule must fail and what its log must say."""

    pair: str
    rule: str          # the rule whose job fails
    log: str           # its log file, relative to the workdir
    patterns: tuple[str, ...]  # regexes the log must contain
    outputs: tuple[str, ...]   # outputs of the failed job that must not exist


def _ingest(pair: str, role: str, *patterns: str) -> Bad:
    return Bad(pair, "ingest", f"logs/ingest/{pair}.{role}.log", (rf"pair '{pair}' {role}", *patterns),
               (f"results/{pair}/input/{role}.fits",))


def _later(pair: str, rule: str, *patterns: str, outputs: tuple[str, ...]) -> Bad:
    return Bad(pair, rule, f"logs/{rule}/{pair}.log", (rf"pair '{pair}'", *patterns), outputs)


_DETECT_OUT = ("candidates.parquet", "psf.json")
_SELECT_OUT = ("candidates.parquet", "stamps.fits")

BAD_PAIRS = [
    _ingest("missing", "science", r"column 'science': file '[^']*nothing-here\.fits' does not exist"),
    _ingest("empty_file", "science", r"empty\.fits", r"empty"),
    _ingest("truncated", "science", r"truncated\.fits", r"truncated"),
    _ingest("not_fits", "science", r"notfits\.fits", r"cannot be read as FITS"),
    _ingest("gzip_corrupt", "science", r"corrupt\.fits\.gz", r"gzip"),
    _ingest("mef_no_variance", "science", r"novar\.fits", r"layout 'mef'", r"VARIANCE"),
    _ingest("shape_mismatch", "science", r"shapes\.fits", r"VARIANCE .*shape \(32, 40\)"),
    _ingest("broken_bzero", "science", r"bzero\.fits", r"integer data \(BITPIX 16\)",
            r"BZERO = 'abc' is not a finite number"),
    _ingest("unknown_hdu", "science", r"mosaic\.fits", r"has no HDU 'CCD9'",
            r"HDUs: \['0:PRIMARY', '1:CCD1', '2:CCD2'\]"),
    _ingest("one_d", "science", r"oned\.fits", r"2-D|1-D|dimension"),
    _ingest("three_d", "science", r"threed\.fits", r"2-D|3-D|dimension"),
    _ingest("all_nan", "science", r"allnan\.fits", r"no usable pixel", r"non-finite image values: 4096"),
    _ingest("all_masked", "science", r"allmasked\.fits", r"no usable pixel", r"'BAD': 4096"),
    _ingest("zero_variance", "science", r"zerovar\.fits", r"no usable pixel", r"variance <= 0 or NaN: 4096"),
    _later("no_common_stars", "warp", r"RegistrationError",
           r"cannot register the template on the science image by sources",
           r"\d+ matched sources \(need >= \d+\)", r"\d+ science and \d+ template sources",
           r"because neither image has a WCS", r"input/template\.fits",
           outputs=(f"results/no_common_stars/warp/{n}" for n in ("template.fits", "warp.json"))),
    _later("no_overlap", "warp", r"RegistrationError", r"because the WCSs do not overlap",
           outputs=(f"results/no_overlap/warp/{n}" for n in ("template.fits", "warp.json"))),
    _later("small_overlap", "select", r"less than one kernel cell", r"sizeCellX=128",
           r"only 100 x 256 pixels",
           outputs=tuple(f"results/small_overlap/select/{n}" for n in _SELECT_OUT)),
    _later("saturated", "detect", r"DetectionError", r"fewer than 3 usable stars",
           r"clean 0, measured 0", r"'SAT'",
           outputs=tuple(f"results/saturated/detect/{n}" for n in _DETECT_OUT)),
    _later("no_stars", "detect", r"InsufficientCandidatesError", r"detected=0",
           outputs=tuple(f"results/no_stars/detect/{n}" for n in _DETECT_OUT)),
]
BAD_PAIRS = [Bad(b.pair, b.rule, b.log, b.patterns, tuple(b.outputs)) for b in BAD_PAIRS]


def _small_image(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(100.0, 3.0, (64, 64)).astype(np.float32)


def _afw(path: Path, image, mask=None, variance=None) -> str:
    """A hand-made afw MEF (PRIMARY + IMAGE/MASK/VARIANCE; any may be None)."""
    hdus = [fits.PrimaryHDU()]
    for name, data in (("IMAGE", image), ("MASK", mask), ("VARIANCE", variance)):
        if data is not None:
            hdus.append(fits.ImageHDU(data=data, name=name))
    fits.HDUList(hdus).writeto(path)
    return str(path)


def _raw_fits(path: Path, data, cards: dict) -> str:
    """A single-HDU file whose header carries ``cards`` as written (no astropy checks)."""
    hdu = fits.PrimaryHDU(data)
    header = hdu.header.copy()
    for key, value in cards.items():
        header[key] = value
    raw = data.astype(data.dtype.newbyteorder(">")).tobytes()
    with open(path, "wb") as handle:
        handle.write(header.tostring().encode("ascii"))
        handle.write(raw + b"\0" * (-len(raw) % 2880))
    return str(path)


def _rot90(exposure):
    """``exposure`` rotated by 90 degrees counter-clockwise (numpy.rot90), without WCS."""
    return Exposure(image=np.rot90(exposure.image).copy(), mask=np.rot90(exposure.mask).copy(),
                    variance=np.rot90(exposure.variance).copy(),
                    mask_planes=exposure.mask_planes, metadata=dict(exposure.metadata))


def _make_inputs(root: Path) -> list[tuple[str, str, str, dict[str, str]]]:
    """Write every input file; return sheet rows (pair, template, science, extras)."""
    rng = np.random.default_rng(2024)
    bad = root / "bad"
    bad.mkdir(parents=True)
    ok = _afw(bad / "ok.fits", _small_image(rng), np.zeros((64, 64), np.int32),
              np.full((64, 64), 9.0, np.float32))
    rows = []

    def row(pair, science, **extra):
        rows.append((pair, ok, str(science), extra))

    row("missing", bad / "nothing-here.fits")
    (bad / "empty.fits").write_bytes(b"")
    row("empty_file", bad / "empty.fits")
    good_bytes = Path(ok).read_bytes()
    (bad / "truncated.fits").write_bytes(good_bytes[: len(good_bytes) - 5000])
    row("truncated", bad / "truncated.fits")
    (bad / "notfits.fits").write_text("SIMPLE? no, this is a text file\n" * 20)
    row("not_fits", bad / "notfits.fits")
    (bad / "corrupt.fits.gz").write_bytes(gzip.compress(good_bytes)[:-3000])
    row("gzip_corrupt", bad / "corrupt.fits.gz")
    row("mef_no_variance", _afw(bad / "novar.fits", _small_image(rng), np.zeros((64, 64), np.int32)),
        science_layout="mef")
    row("shape_mismatch", _afw(bad / "shapes.fits", _small_image(rng), np.zeros((64, 64), np.int32),
                               np.ones((32, 40), np.float32)))
    row("broken_bzero", _raw_fits(bad / "bzero.fits", np.ones((64, 64), np.int16),
                                  {"BZERO": "abc", "GAIN": 1.0}))
    mosaic = fits.HDUList([fits.PrimaryHDU(),
                           fits.ImageHDU(_small_image(rng), name="CCD1"),
                           fits.ImageHDU(_small_image(rng), name="CCD2")])
    mosaic.writeto(bad / "mosaic.fits")
    row("unknown_hdu", bad / "mosaic.fits", science_hdu="CCD9", science_gain="1.0")
    fits.PrimaryHDU(np.ones(64, np.float32)).writeto(bad / "oned.fits")
    row("one_d", bad / "oned.fits")
    fits.PrimaryHDU(np.ones((3, 64, 64), np.float32)).writeto(bad / "threed.fits")
    row("three_d", bad / "threed.fits")
    row("all_nan", _afw(bad / "allnan.fits", np.full((64, 64), np.nan, np.float32),
                        np.zeros((64, 64), np.int32), np.ones((64, 64), np.float32)))
    row("all_masked", _afw(bad / "allmasked.fits", _small_image(rng),
                           np.full((64, 64), 1 << 0, np.int32), np.ones((64, 64), np.float32)))
    row("zero_variance", _afw(bad / "zerovar.fits", _small_image(rng), np.zeros((64, 64), np.int32),
                              np.zeros((64, 64), np.float32)))

    # Pairs that fail after ingest: small simulated pairs, spoiled one way each.
    pair = synth.make_pair(synth.SimulationParams(**SMALL_SIM))
    sci = io.write_exposure(bad / "small_science.fits", pair.science)
    tmpl = pair.template
    # another field (same simulation, other shape: other stars), without WCS: no common stars
    elsewhere = synth.make_pair(synth.SimulationParams(**{**SMALL_SIM, "shape": (300, 300)})).template
    rows.append(("no_common_stars",
                 str(io.write_exposure(bad / "nowcs.fits", elsewhere.with_(wcs=None))),
                 str(io.write_exposure(bad / "sci_nowcs.fits", pair.science.with_(wcs=None))), {}))
    # ... and with a WCS 40 deg away: auto falls back to the stars, which do not match
    far = tmpl.wcs.deepcopy()
    far.wcs.crval = [far.wcs.crval[0] + 40.0, far.wcs.crval[1]]
    far.pixel_shape = (300, 300)
    rows.append(("no_overlap", str(io.write_exposure(bad / "far.fits", elsewhere.with_(wcs=far))),
                 str(sci), {}))
    # The pair's template rotated by 90 degrees (a camera turned on its side), no WCS: it
    # registers (any rotation does) and the pair finishes.
    rows.append(("rotated_90", str(io.write_exposure(bad / "rot90.fits", _rot90(tmpl))),
                 str(io.write_exposure(bad / "sci_rot.fits", pair.science.with_(wcs=None))), {}))
    strip = tmpl.image.copy()
    strip[:, 100:] = np.nan  # only columns 0..99 have data
    rows.append(("small_overlap", str(io.write_exposure(bad / "strip.fits", tmpl.with_(image=strip))),
                 str(sci), {}))
    sat = synth.make_pair(synth.SimulationParams(**{**SMALL_SIM, "flux_min": 50000.0, "saturation": 1000.0}))
    rows.append(("saturated", str(io.write_exposure(bad / "sat_t.fits", sat.template)),
                 str(io.write_exposure(bad / "sat_s.fits", sat.science)), {}))
    empty = synth.make_pair(synth.SimulationParams(
        seed=4, shape=(256, 256), star_density=0.0, galaxy_density=0.0,
        n_transients=0, n_variables=0, n_cosmic_rays=0))
    rows.append(("no_stars", str(io.write_exposure(bad / "empty_t.fits", empty.template)),
                 str(io.write_exposure(bad / "empty_s.fits", empty.science)), {}))

    # The good pair, at a hostile path, with unusable variance in two patches.
    good = synth.make_pair(synth.SimulationParams(**GOOD_SIM))
    variance = good.science.variance.copy()
    variance[NAN_PATCH] = np.nan
    variance[NEG_PATCH] = -1.0
    weird = root / WEIRD_DIR
    weird.mkdir()
    rows.insert(0, ("good", str(io.write_exposure(weird / "tem plate 'a'.fits", good.template)),
                    str(io.write_exposure(weird / 'sci;ence "b" $x.fits', good.science.with_(variance=variance))),
                    {}))
    return rows




def _write_sheet(workdir: Path, rows) -> None:
    extras = sorted({k for *_, extra in rows for k in extra})
    lines = ["\t".join(["pair", "template", "science", *extras])]
    for pair, template, science, extra in rows:
        lines.append("\t".join([pair, template, science, *(extra.get(k, "") for k in extras)]))
    (workdir / "config").mkdir(exist_ok=True)
    (workdir / "config" / "pairs.tsv").write_text("\n".join(lines) + "\n")


def _config() -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["simulate"] = {}
    config["pairs"] = "config/pairs.tsv"
    config["model_psf_match"].pop("exposures", None)  # image differencing only
    return config


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bad_inputs")
    rows = _make_inputs(workdir / "data")
    _write_sheet(workdir, rows)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(_config()))
    run = run_snakemake(workdir, "--cores", "2", "--keep-going")
    return workdir, run


@pytest.mark.parametrize("case", BAD_PAIRS, ids=[b.pair for b in BAD_PAIRS])
def test_bad_pair_fails_alone_with_a_clear_message(suite_run, case):
    workdir, run = suite_run
    output = run.stdout + run.stderr
    assert run.returncode != 0
    # Snakemake names the failed rule and the pair's wildcards.
    assert re.search(rf"Error in rule {case.rule}:", output), output[-3000:]
    assert f"pair={case.pair}" in output
    log = (workdir / case.log).read_text()
    for pattern in case.patterns:
        assert re.search(pattern, log), f"{pattern!r} not in {case.log}:\n{log[-2000:]}"
    assert "step failed" in log and "Traceback" in log
    for out in case.outputs:
        assert not (workdir / out).exists(), out
    assert not (workdir / "results" / case.pair / "difference.fits").exists()


def test_no_temporary_files_left_anywhere(suite_run):
    workdir, _ = suite_run
    assert not list((workdir / "results").rglob(".tmp-*"))


def test_good_pair_at_a_hostile_path_finishes_normally(suite_run):
    workdir, run = suite_run
    out = workdir / "results" / "good"
    assert (out / "difference.fits").is_file(), run.stdout[-3000:] + run.stderr[-3000:]
    metrics = io.read_json(out / "metrics.json")
    assert metrics["verdict"] == "well constrained"
    # Same field as tests/workflow's good pair: kernel sum within 1 % of the true scale.
    assert metrics["kernel_sum"] == pytest.approx(synth.SimulationParams(**GOOD_SIM).photometric_scale,
                                                  rel=0.01)
    assert abs(metrics["difference"]["clipped_std"] - 1.0) < 0.05
    difference = io.read_exposure(out / "difference.fits")
    no_data = difference.plane("NO_DATA")
    # The unusable-variance patches are flagged, never turned into numbers or NaN elsewhere.
    assert no_data[NAN_PATCH].all() and no_data[NEG_PATCH].all()
    assert np.isfinite(difference.image[~no_data]).all()
    assert np.isfinite(difference.variance[~no_data]).all()
    assert (difference.variance[~no_data] > 0).all()


def test_template_rotated_by_90_degrees_registers_and_subtracts(suite_run):
    workdir, run = suite_run
    out = workdir / "results" / "rotated_90"
    assert (out / "difference.fits").is_file(), run.stdout[-3000:] + run.stderr[-3000:]
    registration = io.read_json(out / "warp" / "warp.json")["registration"]
    assert registration["method"] == "sources"
    assert registration["reason"] == "neither image has a WCS"
    # numpy.rot90 maps science (x, y) to template (y, nx - 1 - x): -90 degrees
    assert registration["transform"]["rotation_deg"] == pytest.approx(-90.0, abs=0.05)
    metrics = io.read_json(out / "metrics.json")
    assert metrics["kernel_sum"] == pytest.approx(synth.SimulationParams(**SMALL_SIM)
                                                  .photometric_scale, rel=0.02)


def test_hostile_path_was_really_used(suite_run):
    workdir, _ = suite_run
    ingested = io.read_exposure(workdir / "results/good/input/science.fits")
    original = io.read_exposure(next((workdir / "data" / WEIRD_DIR).glob("sci*")))
    np.testing.assert_array_equal(ingested.image, original.image)


# ---------------------------------------------------------------------- config-level rows
CONFIG_ROWS = [
    ("wrong_type", {"psf_match": {"kernelSize": "big"}}, None, [r"kernelSize", r"big"]),
    ("even_kernel_size", {"psf_match": {"kernelSize": 20}}, None, [r"kernelSize", r"20", r"odd"]),
    ("out_of_range", {"psf_match": {"sizeCellX": 0}}, None, [r"sizeCellX", r"\b0\b"]),
    ("unknown_key", {"psf_match": {"kernalSize": 21}}, None, [r"kernalSize"]),
    ("unknown_section", {"detektion": {}}, None, [r"detektion"]),
    ("misspelt_warp_key", {"warp": {"registraton": "sources"}}, None,
     [r"warp\.registraton: unknown key; did you mean 'registration'\?"]),
    ("bad_registration", {"warp": {"registration": "stars"}}, None,
     [r"warp\.registration = 'stars'", r"auto", r"sources"]),
    ("duplicate_pair", None, "pair\ttemplate\tscience\na\tT\tS\na\tT\tS\n",
     [r"line 3", r"duplicate pair id 'a'"]),
    ("missing_column", None, "pair\ttemplate\na\tT\n", [r"line 1", r"missing column\(s\) \['science'\]"]),
    ("escaping_id", None, "pair\ttemplate\tscience\n../x\tT\tS\n", [r"line 2", r"column 'pair'", r"\.\./x"]),
]


@pytest.mark.parametrize("name,change,sheet,patterns", CONFIG_ROWS, ids=[r[0] for r in CONFIG_ROWS])
def test_config_mistakes_stop_before_any_job(tmp_path, name, change, sheet, patterns):
    config = _config()
    for section, values in (change or {}).items():
        if isinstance(config.get(section), dict):
            config[section].update(values)
        else:
            config[section] = values
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    data = tmp_path / "T"
    shutil.copy(Path(__file__), data)  # any existing file: the sheet's paths must exist
    shutil.copy(Path(__file__), tmp_path / "S")
    (tmp_path / "config" / "pairs.tsv").write_text(sheet or "pair\ttemplate\tscience\na\tT\tS\n")
    run = run_snakemake(tmp_path, "-n")
    output = run.stdout + run.stderr
    assert run.returncode != 0
    for pattern in patterns:
        assert re.search(pattern, output), f"{pattern!r} not in:\n{output[-2000:]}"
    # a few lines naming the mistake, not the schema (Snakemake's validate printed ~700)
    assert len(output.splitlines()) < 30, output
    assert not (tmp_path / "results").exists()
