"""A user's own data: a config that names only a pairs sheet, and the README's example.

* A user config (``--configfile``) that names a pairs sheet and turns the demo and
  model-PSF matching off plans the jobs of that sheet's pairs and nothing else (dry run).
* README.md's "Your own data" example (the pairs sheet, the config and the command,
  between ``<!-- own-data:... -->`` markers) is copied into a scratch folder and run
  as written, on the "user's" files the sheet names: two simulated raw frames, unsigned
  16-bit without WCS (the reference without GAIN and SATURATE cards, the new frame as
  extension ``CCD2`` of a multi-extension file), offset by (14.6, -9.3) px and rotated
  0.4°.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits
from tests.snakemake_run import run_snakemake

from psfmatch import io, synth

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def readme_block(name: str) -> str:
    """The code block that follows ``<!-- own-data:<name> -->`` in README.md."""
    text = (REPO / "README.md").read_text()
    match = re.search(rf"<!-- own-data:{name} -->\n```\w*\n(.*?)```", text, re.S)
    assert match, f"README.md has no own-data:{name} block"
    return match.group(1)


def _jobs(dry_run_output: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    table = dry_run_output.split("Job stats:")[-1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)
            if m.group(1) not in ("total", "job")}


def _workdir(tmp_path: Path) -> Path:
    """A folder laid out like the repository for a run: the shipped config/config.yaml."""
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "config.yaml", tmp_path / "config" / "config.yaml")
    return tmp_path


@pytest.mark.parametrize("model_psf_off", [None, {"exposures": None}],
                         ids=["model_psf_match-null", "exposures-null"])
def test_user_config_runs_only_its_own_pairs(tmp_path, model_psf_off):
    workdir = _workdir(tmp_path)
    for name in ("a_t.fits", "a_s.fits", "b_t.fits", "b_s.fits"):
        (workdir / name).write_bytes(b"")  # the dry run only needs the files to exist
    (workdir / "mine.tsv").write_text("pair\ttemplate\tscience\n"
                                      "night1\ta_t.fits\ta_s.fits\n"
                                      "night2\tb_t.fits\tb_s.fits\n")
    (workdir / "mine.yaml").write_text(yaml.safe_dump(
        {"pairs": "mine.tsv", "simulate": None, "model_psf_match": model_psf_off}))
    run = run_snakemake(workdir, "-n", "--configfile", "mine.yaml", cwd=workdir)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    jobs = _jobs(run.stdout)
    assert jobs["ingest"] == 4  # two roles of two pairs
    for rule in ("warp", "convolve", "qa"):
        assert jobs[rule] == 2, (rule, jobs)
    for rule in ("simulate", "simulated_psf", "model_psf_kernel", "model_psf_convolve"):
        assert rule not in jobs, (rule, jobs)
    assert set(re.findall(r"pair=([\w.-]+)", run.stdout)) == {"night1", "night2"}
    assert "demo" not in run.stdout


def test_empty_simulate_block_keeps_the_demo(tmp_path):
    # Why the README says `simulate: null`: --configfile merges key by key.
    workdir = _workdir(tmp_path)
    for sheet in ("pairs.tsv", "exposures.tsv"):  # the demo's sheets
        shutil.copy(REPO / "config" / sheet, workdir / "config" / sheet)
    (workdir / "mine.yaml").write_text("simulate: {}\n")
    run = run_snakemake(workdir, "-n", "--configfile", "mine.yaml", cwd=workdir)
    assert run.returncode == 0, run.stderr[-3000:]
    assert _jobs(run.stdout)["simulate"] == 1


def _write_user_files(workdir: Path, pairs_sheet: str) -> synth.SimulatedPair:
    """The raw frames the README's sheet names, made from one simulated pair."""
    params = synth.SimulationParams(seed=3, shape=(512, 512), star_density=6000.0,
                                    flux_min=2000.0, gain=1.5, bad_column=None,
                                    template_offset=(14.6, -9.3, 0.4))
    pair = synth.make_pair(params)
    header_row, row = (line.split("\t") for line in pairs_sheet.strip().splitlines())
    cells = dict(zip(header_row, row, strict=True))
    assert cells["science_hdu"] == "CCD2"  # the layout written below
    assert float(cells["template_saturation"]) == params.saturation

    def raw(exposure, sky):
        return np.clip(np.rint(exposure.image + sky), 0, 65535).astype(np.uint16)

    for role in ("template", "science"):
        (workdir / cells[role]).parent.mkdir(parents=True, exist_ok=True)
    # the reference: one HDU, no WCS, no GAIN or SATURATE card (the sheet gives them)
    ref = fits.PrimaryHDU(raw(pair.template, params.sky_template))
    ref.header["RDNOISE"] = params.read_noise
    ref.writeto(workdir / cells["template"])
    # the new frame: CCD2 of a two-CCD file, no WCS, with GAIN/RDNOISE/SATURATE
    ccd = fits.ImageHDU(raw(pair.science, params.sky_science), name="CCD2")
    ccd.header.update(GAIN=params.gain, RDNOISE=params.read_noise, SATURATE=params.saturation)
    other = fits.ImageHDU(np.zeros((64, 64), np.uint16), name="CCD1")
    fits.HDUList([fits.PrimaryHDU(), other, ccd]).writeto(workdir / cells["science"])
    return pair


def test_readme_own_data_example_runs_as_written(tmp_path):
    workdir = _workdir(tmp_path)
    sheet, config, command = (readme_block(n) for n in ("pairs", "config", "run"))
    settings = yaml.safe_load(config)
    (workdir / settings["pairs"]).write_text(sheet)
    (workdir / "my.yaml").write_text(config)
    pair = _write_user_files(workdir, sheet)
    args = shlex.split(command.strip())
    assert args[0] == "snakemake"
    assert "--configfile" in args
    run = run_snakemake(workdir, *args[1:], cwd=workdir)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    out = workdir / "results" / "field7"
    assert (out / "difference.fits").is_file()
    assert not (workdir / "results" / "simulated").exists()  # the demo is off
    assert not (workdir / "results" / "psf_matched").exists()  # so is model-PSF matching

    registration = io.read_json(out / "warp" / "warp.json")["registration"]
    assert registration["method"] == "sources"
    assert registration["transform"]["rotation_deg"] == pytest.approx(0.4, abs=0.01)
    metrics = io.read_json(out / "metrics.json")
    assert metrics["verdict"] == "well constrained"
    # photometric scale 1.1 of the simulation; both variances estimated (from the sheet's
    # gain for the reference, the header's for the new frame)
    assert metrics["kernel_sum"] == pytest.approx(pair.truth.photometric_scale, rel=0.01)
    assert "gain 1.5 e-/ADU (gain argument)" in metrics["inputs"]["template"]["variance"]
    assert "gain 1.5 e-/ADU (header GAIN)" in metrics["inputs"]["science"]["variance"]
    assert abs(metrics["difference"]["clipped_std"] - 1.0) < 0.1

    summary = io.read_table(workdir / "results" / "qa" / "summary.parquet").columns
    assert list(summary["pair"]) == ["field7"]
    assert summary["registration"][0] == "sources"
    assert summary["registration_n_matches"][0] >= 50
    assert "variance estimated" in summary["warnings"][0]
    html = (workdir / "results" / "qa" / "summary.html").read_text()
    assert "<title>psfmatch run summary: 1 ok, 0 failed, 0 incomplete</title>" in html
