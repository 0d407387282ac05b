"""Unchanged images are not rewritten: the warp pass-through link and the ingest copy.

Both shortcuts must give what the full steps would have written: the same exposure
(bytes) and the same record.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from psfmatch import io
from psfmatch.align import align_template
from psfmatch.config import PsfMatchConfig, WarpOptions
from psfmatch.errors import RegistrationError
from psfmatch.steps.fields import step_config
from psfmatch.steps.ingest import ingest
from psfmatch.steps.prepare import warp
from psfmatch.synth import SimulationParams, make_pair


@pytest.fixture(scope="module")
def pair():
    return make_pair(SimulationParams(shape=(160, 192), seed=4, star_density=6000.0))


def _with_no_data(exposure):
    mask = exposure.mask.copy()
    mask[:3, :] |= np.int32(1 << exposure.mask_planes["NO_DATA"])
    return exposure.with_(mask=mask)


@pytest.mark.parametrize("registration", ["auto", "wcs"])
def test_a_template_on_the_science_grid_is_linked_with_the_full_warp_record(
        tmp_path, pair, registration):
    template = _with_no_data(pair.template)  # 3 of 160 rows without data: coverage 157/160
    (tmp_path / "input").mkdir()
    t_path = io.write_exposure(tmp_path / "input" / "template.fits", template)
    s_path = io.write_exposure(tmp_path / "input" / "science.fits", pair.science)
    out = tmp_path / "warp" / "template.fits"
    out.parent.mkdir()
    warp(template_path=t_path, science_path=s_path, output_path=out,
         info_path=tmp_path / "warp" / "warp.json",
         config=step_config("warp", {"psf_match": {}, "warp": {"registration": registration}}),
         label="pair 'p'")
    assert out.is_symlink()
    assert os.readlink(out) == os.path.join("..", "input", "template.fits")  # relative
    # what the full warp computes, written: the same bytes
    warped, record, _ = align_template(io.read_exposure(t_path), io.read_exposure(s_path),
                                       warp=WarpOptions(registration=registration),
                                       warping=PsfMatchConfig.from_lsst({}).warping,
                                       label="p")
    full = io.write_exposure(tmp_path / "full.fits", warped)
    assert out.read_bytes() == full.read_bytes()
    info = io.read_json(tmp_path / "warp" / "warp.json")
    # identical cards: offset exactly 0 (the full warp finds ~1e-9 px of rounding)
    assert info["max_grid_offset_pix"] == 0.0
    assert record["max_grid_offset_pix"] < 1e-6
    assert info["coverage_fraction"] == pytest.approx(157 / 160, abs=1e-12)
    assert {k: v for k, v in info.items() if k != "max_grid_offset_pix"} == \
        {k: v for k, v in io.read_json(io.write_json(tmp_path / "r.json", record)).items()
         if k != "max_grid_offset_pix"}


def test_registration_by_sources_is_never_a_pass_through(tmp_path, pair):
    # identical grids, but registration "sources" always matches stars: here too few of
    # them, which raises, so the step did not take the pass-through
    t_path = io.write_exposure(tmp_path / "t.fits", pair.template)
    s_path = io.write_exposure(tmp_path / "s.fits", pair.science)
    config = {"psf_match": {}, "warp": {"registration": "sources",
                                        "sources": {"min_matches": 1000}}}
    with pytest.raises(RegistrationError, match="registered by sources because"):
        warp(template_path=t_path, science_path=s_path, output_path=tmp_path / "w.fits",
             info_path=tmp_path / "warp.json", config=step_config("warp", config), label="p")
    assert not (tmp_path / "w.fits").exists()


def test_ingest_copies_an_unchanged_afw_file_and_writes_a_changed_one(tmp_path, pair):
    source = io.write_exposure(tmp_path / "in.fits", pair.science)
    ingest(inputs={"image": str(source)}, output_path=tmp_path / "out.fits", label="p")
    assert not (tmp_path / "out.fits").is_symlink()
    assert (tmp_path / "out.fits").read_bytes() == source.read_bytes()
    # a variance <= 0 pixel: ingest flags it, so the file is written, not copied
    variance = pair.science.variance.copy()
    variance[5, 7] = 0.0
    changed = io.write_exposure(tmp_path / "in2.fits", pair.science.with_(variance=variance))
    ingest(inputs={"image": str(changed)}, output_path=tmp_path / "out2.fits", label="p")
    out = io.read_exposure(tmp_path / "out2.fits")
    assert out.plane("NO_DATA")[5, 7]
    assert np.isinf(out.variance[5, 7])
