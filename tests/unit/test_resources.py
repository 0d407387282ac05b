"""Job sizing (psfmatch.resources) and the header-only shape reader (psfmatch.io.headers)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from psfmatch import io, resources
from psfmatch.errors import ConfigError, InputFileError, MemoryBudgetError
from psfmatch.exposure import Exposure
from psfmatch.io.headers import read_image_shape

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ read_image_shape
def test_shape_of_afw_exposure_is_that_of_its_image_extension(tmp_path):
    image = np.zeros((30, 50), dtype=np.float32)
    exposure = Exposure(image=image, mask=np.zeros(image.shape, np.int32),
                        variance=np.ones(image.shape, np.float32))
    path = io.write_exposure(tmp_path / "exp.fits", exposure)
    assert read_image_shape(path) == (30, 50)


def test_shape_of_single_hdu_and_compressed_images(tmp_path):
    fits.PrimaryHDU(np.zeros((7, 11), np.float32)).writeto(tmp_path / "plain.fits")
    assert read_image_shape(tmp_path / "plain.fits") == (7, 11)
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(np.ones((64, 40), np.float32))])
    hdul.writeto(tmp_path / "packed.fits.fz")
    assert read_image_shape(tmp_path / "packed.fits.fz") == (64, 40)


def test_shape_is_read_without_the_pixel_data(tmp_path):
    # A file cut short inside its pixel data: the header alone still gives the shape.
    path = tmp_path / "cut.fits"
    fits.PrimaryHDU(np.zeros((512, 512), np.float32)).writeto(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: 2880 + 1000])
    assert read_image_shape(path) == (512, 512)


def test_shape_errors_name_the_file(tmp_path):
    with pytest.raises(InputFileError, match="missing.fits"):
        read_image_shape(tmp_path / "missing.fits")
    (tmp_path / "text.fits").write_text("not a FITS file at all\n" * 200)
    with pytest.raises(InputFileError, match="text.fits"):
        read_image_shape(tmp_path / "text.fits")
    fits.PrimaryHDU(np.zeros((3, 4, 5), np.float32)).writeto(tmp_path / "cube.fits")
    with pytest.raises(InputFileError, match="cube.fits.*no HDU declaring a 2-D image"):
        read_image_shape(tmp_path / "cube.fits")
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros(5, np.float32), name="IMAGE")])
    hdul.writeto(tmp_path / "vector.fits")
    with pytest.raises(InputFileError, match=r"vector.fits \[HDU 1 'IMAGE'\]"):
        read_image_shape(tmp_path / "vector.fits")


# ------------------------------------------------------------------ estimates
@pytest.mark.parametrize("step", sorted(resources.STEP_COSTS))
def test_estimates_grow_with_size_and_attempt(step):
    small = resources.estimate(step, 512 * 512)
    large = resources.estimate(step, 8192 * 8192)
    assert large.mem_mb >= small.mem_mb
    assert large.runtime >= small.runtime >= resources.MIN_RUNTIME_MIN
    # memory declared with the margin, in 100 MB steps
    peak = resources.peak_memory_mb(step, 2048 * 2048)
    first = resources.estimate(step, 2048 * 2048, attempt=1)
    assert first.mem_mb % 100 == 0
    margin = resources.MEMORY_MARGIN
    assert margin * peak <= first.mem_mb < margin * peak + 100
    second = resources.estimate(step, 2048 * 2048, attempt=2)
    assert 2 * margin * peak <= second.mem_mb < 2 * margin * peak + 100
    assert second.runtime == 2 * first.runtime
    assert second.cpus_per_task == first.cpus_per_task


def test_only_multithreaded_steps_ask_for_more_cpus():
    huge = 10_000 * 10_000
    assert resources.estimate("convolve", 2048 * 2048).cpus_per_task == 1
    assert resources.estimate("convolve", 4096 * 4096).cpus_per_task == 2
    assert resources.estimate("warp", huge).cpus_per_task == 4
    assert resources.estimate("detect", huge).cpus_per_task == 1


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="no resource model for step 'no_such_step'.*convolve"):
        resources.estimate("no_such_step", 100)
    with pytest.raises(ConfigError, match="attempt"):
        resources.estimate("detect", 100, attempt=0)
    with pytest.raises(ConfigError, match="positive"):
        resources.peak_memory_mb("detect", 0)


# ------------------------------------------------------------------ memory check
def test_check_memory_names_step_size_estimate_and_declared_value():
    peak = resources.peak_memory_mb("convolve", 4096 * 4096)
    with pytest.raises(MemoryBudgetError) as err:
        resources.check_memory("convolve", shape=(4096, 4096), declared_mem_mb=300)
    text = str(err.value)
    assert "'convolve'" in text
    assert "4096x4096" in text
    assert f"{peak:.0f} MB" in text
    assert "mem_mb=300" in text


@pytest.mark.parametrize("step", sorted(resources.STEP_COSTS))
@pytest.mark.parametrize("side", [256, 2048, 12000])
def test_what_a_rule_declares_always_passes_its_own_check(step, side):
    declared = resources.estimate(step, side * side).mem_mb
    assert resources.check_memory(step, shape=(side, side), declared_mem_mb=declared) <= declared


def test_check_step_memory_reads_the_largest_image(tmp_path):
    fits.PrimaryHDU(np.zeros((100, 100), np.float32)).writeto(tmp_path / "small.fits")
    # a 20000² image's header without its 1.6 GB of pixels (only the header is read)
    header = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2),
                          ("NAXIS1", 20000), ("NAXIS2", 20000)])
    (tmp_path / "big.fits").write_bytes(header.tostring().encode("ascii"))
    declared = resources.estimate("detect", 100 * 100).mem_mb
    resources.check_step_memory("detect", tmp_path / "small.fits", declared)
    with pytest.raises(MemoryBudgetError, match="20000x20000"):
        resources.check_step_memory("detect", [tmp_path / "small.fits", tmp_path / "big.fits"],
                                    declared)


# ------------------------------------------------------------------ calibration holds
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
@pytest.mark.parametrize("step", ["simulate", "ingest"])
def test_measured_peak_memory_stays_under_the_estimate(tmp_path, step):
    """A step run in a fresh interpreter (as a job is) peaks below the model's estimate."""
    side = 1536
    sim = {"seed": 5, "shape": [side, side]}
    paths = {k: str(tmp_path / f"{k}.{ext}") for k, ext in
             (("template", "fits"), ("science", "fits"), ("truth", "json"),
              ("sources", "parquet"), ("ingested", "fits"))}
    setup = "" if step == "simulate" else textwrap.dedent(f"""
        from psfmatch.steps.simulate import simulate
        simulate(simulation={sim!r}, template_path={paths['template']!r},
                       science_path={paths['science']!r}, truth_path={paths['truth']!r},
                       sources_path={paths['sources']!r})
    """)
    call = {
        "simulate": "from psfmatch.steps.simulate import simulate\n"
                    f"simulate(simulation={sim!r}, template_path={paths['template']!r}, "
                    f"science_path={paths['science']!r}, truth_path={paths['truth']!r}, "
                    f"sources_path={paths['sources']!r})",
        "ingest": "from psfmatch.steps.ingest import ingest\n"
                  f"ingest(inputs={{'image': {paths['science']!r}}}, "
                  f"output_path={paths['ingested']!r}, label='test')",
    }[step]
    # the set-up runs in its own interpreter so that its memory does not count
    # VmHWM: peak RSS of this process image (ru_maxrss would carry the forking parent's peak)
    # each step imports only its own module, as its job would
    code = ("import re\nfrom pathlib import Path\n{}\n"
            "status = Path('/proc/self/status').read_text()\n"
            "print(int(re.search(r'VmHWM:\\s+(\\d+)', status)[1]) / 1024)")
    if setup:
        subprocess.run([sys.executable, "-c", code.format(setup)], check=True,
                       capture_output=True, cwd=REPO)
    run = subprocess.run([sys.executable, "-c", code.format(call)], check=True,
                         capture_output=True, text=True, cwd=REPO)
    measured = float(run.stdout.strip().splitlines()[-1])
    estimated = resources.peak_memory_mb(step, side * side)
    assert measured <= estimated, f"{step}: measured {measured:.0f} MB > estimate {estimated:.0f}"
    # and the estimate is not wildly pessimistic (within a factor 2 of the measurement)
    assert estimated < 2 * measured
