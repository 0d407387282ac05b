"""The model_psf_match config block: schema and the ModelPsfMatch kernel defaults."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from psfmatch.config import ModelPsfMatchConfig, PsfMatchConfig

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture
def config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_kernel_block_takes_ip_diffim_defaults_with_set_defaults(config):
    cfg = ModelPsfMatchConfig.kernel_from_lsst(config["model_psf_match"]["kernel"])
    base = PsfMatchConfig()
    # setDefaults: no clipping, scaleByFwhm off; not the production image-differencing block
    assert not (cfg.single_kernel_clipping or cfg.kernel_sum_clipping or cfg.spatial_kernel_clipping)
    assert cfg.scale_by_fwhm is False and cfg.constant_variance_weighting is True
    assert cfg.fit_for_background is base.fit_for_background is False
    assert cfg.spatial_kernel_order == base.spatial_kernel_order == 2
    # a user value applied after setDefaults wins, as in ip_diffim
    assert ModelPsfMatchConfig.kernel_from_lsst({"scaleByFwhm": True}).scale_by_fwhm is True


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        (("target",), {"model": "moffat", "fwhm": 4.0}, "beta"),
        (("target",), {"model": "gaussian"}, "fwhm"),
        (("target",), {"model": "file"}, "path"),
        (("target",), {"model": "airy", "fwhm": 4.0}, "airy"),
        (("kernel", "kernalSize"), 9, "kernalSize"),
        (("kernel_sum",), 0, "kernel_sum"),
    ],
)
def test_schema_rejects_bad_model_psf_blocks(config, path, value, needle):
    node = config["model_psf_match"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(WorkflowError, match=needle):
        validate(copy.deepcopy(config), schema=str(SCHEMA_PATH))
