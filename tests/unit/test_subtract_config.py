"""The subtract block (AlardLuptonSubtractConfig), our difference section and the schema agree."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from psfmatch.config import (
    DecorrelateConfig,
    DifferenceOptions,
    ScaleVarianceConfig,
    SubtractConfig,
    check_subtraction,
)
from psfmatch.errors import ConfigError
from psfmatch.steps.fields import step_config

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"

# AlardLuptonSubtractConfig, DecorrelateALKernelConfig and ScaleVarianceConfig defaults
# (docs/configuration.md#subtract-block), written out by hand: the independent record the
# dataclass defaults are checked against.
REFERENCE_DEFAULTS = {
    "mode": "convolveTemplate",
    "doDecorrelation": True,
    "decorrelate": {
        "ignoreMaskPlanes": ["INTRP", "EDGE", "DETECTED", "SAT", "CR", "BAD", "NO_DATA",
                             "DETECTED_NEGATIVE"],
        "completeVarPlanePropagation": False,
    },
    "requiredTemplateFraction": 0.1,
    "minTemplateFractionForExpectedSuccess": 0.2,
    "doScaleVariance": True,
    "scaleVariance": {
        "maskPlanes": ["DETECTED", "DETECTED_NEGATIVE", "BAD", "SAT", "NO_DATA", "INTRP"],
        "limit": 10.0,
    },
    "doSubtractBackground": False,
    "badMaskPlanes": ["NO_DATA", "BAD", "SAT", "EDGE"],
    "preserveTemplateMask": ["NO_DATA", "BAD", "HIGH_VARIANCE"],
    "renameTemplateMask": ["SAT", "INJECTED", "INJECTED_CORE"],
    "preserveMaskPlanes": ["INJECTED", "INJECTED_CORE", "INJECTED_TEMPLATE",
                           "INJECTED_CORE_TEMPLATE"],
}
# What config/config.yaml ships instead (README "Subtraction modes" says why): auto, and
# the fitted background subtracted as psfmatch always did.
PSFMATCH_OVERRIDES = {"mode": "auto", "doSubtractBackground": True}


@pytest.fixture(scope="module")
def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


@pytest.fixture
def config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_dataclass_defaults_equal_ip_diffim_defaults():
    assert SubtractConfig().to_lsst() == REFERENCE_DEFAULTS


def test_shipped_block_is_the_defaults_with_the_documented_overrides(config):
    validate(copy.deepcopy(config), schema=str(SCHEMA_PATH))
    parsed = SubtractConfig.from_lsst(config["subtract"], where="subtract")
    assert parsed.to_lsst() == {**REFERENCE_DEFAULTS, **PSFMATCH_OVERRIDES}
    assert DifferenceOptions.from_dict(config["difference"], where="difference") == (
        DifferenceOptions())


def test_schema_properties_are_the_lsst_names_described_without_defaults(schema):
    block = schema["properties"]["subtract"]["properties"]
    assert set(block) == set(SubtractConfig.lsst_names())
    assert set(block["decorrelate"]["properties"]) == set(DecorrelateConfig.lsst_names())
    assert set(block["scaleVariance"]["properties"]) == set(ScaleVarianceConfig.lsst_names())
    ours = schema["properties"]["difference"]["properties"]
    assert set(ours) == {"preconvolution", "decorrelation_grid", "zero_point", "zero_point_key"}

    def walk(node, where):
        for name, prop in node.get("properties", {}).items():
            assert "description" in prop, f"{where}.{name} has no description"
            assert "default" not in prop, f"{where}.{name} carries a default"
            walk(prop, f"{where}.{name}")

    walk(schema["properties"]["subtract"], "subtract")
    walk(schema["properties"]["difference"], "difference")


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        (("subtract", "mode"), "convolveBoth", "convolveBoth"),
        (("subtract", "doDecorelation"), True, "doDecorelation"),
        (("subtract", "requiredTemplateFraction"), 1.5, "1.5"),
        (("subtract", "decorrelate", "ignoreMaskPlanes"), ["bad"], "bad"),
        (("subtract", "scaleVariance", "limit"), 0.5, "0.5"),
        (("difference", "decorrelation_grid"), [1, 2, 3], "decorrelation_grid"),
        (("difference", "preconvolve"), True, "preconvolve"),
    ],
)
def test_schema_rejects_bad_keys_and_values_naming_them(config, path, value, needle):
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(WorkflowError, match=needle):
        validate(config, schema=str(SCHEMA_PATH))


@pytest.mark.parametrize(
    ("block", "needle"),
    [
        ({"mode": "convolveBoth"}, "mode must be one of"),
        ({"requiredTemplateFraction": 2.0}, "requiredTemplateFraction must be in"),
        ({"doDecorrelation": "yes"}, "doDecorrelation must be of type bool"),
        ({"scaleVariance": {"limit": 0.5}}, "limit must be >= 1"),
        ({"decorrelate": {"ignoreMaskPlane": []}}, "ignoreMaskPlane"),
    ],
)
def test_dataclass_rejects_bad_values_naming_them(block, needle):
    with pytest.raises(ConfigError, match=needle):
        SubtractConfig.from_lsst(block, where="subtract")


def test_difference_section_checks_its_grid_and_the_preconvolution_mode():
    with pytest.raises(ConfigError, match="decorrelation_grid"):
        DifferenceOptions.from_dict({"decorrelation_grid": [0, 2]}, where="difference")
    with pytest.raises(ConfigError, match="zero_point must be of type float"):
        DifferenceOptions.from_dict({"zero_point": "27"}, where="difference")
    pre = DifferenceOptions(preconvolution=True)
    check_subtraction(SubtractConfig(mode="auto"), pre)
    with pytest.raises(ConfigError, match="preconvolution.*convolveScience"):
        check_subtraction(SubtractConfig(mode="convolveScience"), pre)


def test_each_subtract_field_is_read_by_the_steps_that_use_it(config):
    """Toggling doDecorrelation changes the params of decorrelate alone; mode those of
    subtraction_mode alone (what follows reruns because its inputs change)."""
    steps = ("warp", "subtraction_mode", "detect", "select", "fit_single_kernels",
             "kernel_sum_clip", "spatial_fit", "assess", "convolve", "preconvolve",
             "decorrelate", "qa")
    before = {s: step_config(s, config) for s in steps}
    for key, value, readers in (("doDecorrelation", False, {"decorrelate"}),
                                ("mode", "convolveScience", {"subtraction_mode"}),
                                ("doSubtractBackground", False, {"convolve"}),
                                ("badMaskPlanes", ["BAD"], {"preconvolve"})):
        changed = copy.deepcopy(config)
        changed["subtract"][key] = value
        after = {s: step_config(s, changed) for s in steps}
        assert {s for s in steps if after[s] != before[s]} == readers, key
