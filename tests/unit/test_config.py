"""The YAML psf_match block, its JSON schema, the dataclass and ip_diffim's defaults agree."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from psfmatch.config import (
    DetectionConfig,
    ModelPsfMatchConfig,
    PsfMatchConfig,
    WarpingConfig,
)
from psfmatch.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"

# ip_diffim defaults as read from lsst/ip_diffim 3a2e29f8 (docs/configuration.md#psf-match-block,
# docs/configuration.md#model-psf-blocks, docs/warp-and-subtract.md#warping). Written out
# by hand here on purpose: this is the independent record the dataclass defaults are
# checked against.
REFERENCE_DEFAULTS = {
    "fitForBackground": False,
    "useAfwBackground": False,
    "kernelBasisSet": "alard-lupton",
    "kernelSize": 21,
    "scaleByFwhm": True,
    "kernelSizeFwhmScaling": 6.0,
    "kernelSizeMin": 21,
    "kernelSizeMax": 35,
    "spatialModelType": "chebyshev1",
    "spatialKernelOrder": 2,
    "spatialBgOrder": 1,
    "sizeCellX": 128,
    "sizeCellY": 128,
    "nStarPerCell": 5,
    "maxSpatialIterations": 3,
    "usePcaForSpatialKernel": False,  # AL; DF setDefaults -> True
    "subtractMeanForPca": True,
    "numPrincipalComponents": 5,
    "singleKernelClipping": True,
    "kernelSumClipping": True,
    "spatialKernelClipping": True,
    "checkConditionNumber": False,
    "badMaskPlanes": ["NO_DATA", "EDGE", "SAT"],
    "candidateResidualMeanMax": 0.25,
    "candidateResidualStdMax": 1.50,
    "useCoreStats": False,
    "candidateCoreRadius": 3,
    "maxKsumSigma": 3.0,
    "maxConditionNumber": 5.0e7,  # AL; DF setDefaults -> 5.0e6
    "conditionNumberType": "EIGENVALUE",
    "maxSpatialConditionNumber": 1.0e10,
    "iterateSingleKernel": False,
    "constantVarianceWeighting": True,
    "calculateKernelUncertainty": False,
    "useBicForKernelBasis": False,
    "alardNGauss": 3,
    "alardDegGauss": [4, 2, 2],
    "alardSigGauss": [0.7, 1.5, 3.0],
    "alardGaussBeta": 2.0,
    "alardMinSig": 0.7,
    "alardDegGaussDeconv": 3,
    "alardMinSigDeconv": 0.4,
    "alardNGaussDeconv": 3,
    "useRegularization": True,
    "regularizationType": "centralDifference",
    "centralRegularizationStencil": 9,
    "forwardRegularizationOrders": [1, 2],
    "regularizationBorderPenalty": 3.0,
    "lambdaType": "absolute",
    "lambdaValue": 0.2,
    "lambdaScaling": 1e-4,
    "lambdaStepType": "log",
    "lambdaMin": -1.0,
    "lambdaMax": 2.0,
    "lambdaStep": 0.1,
    "detectionConfig": {
        "detThreshold": 10.0,
        "detThresholdType": "pixel_stdev",
        "detOnTemplate": True,
        "badMaskPlanes": ["NO_DATA", "EDGE", "SAT"],
        "fpNpixMin": 5,
        "fpNpixMax": 500,
        "fpGrowKernelScaling": 1.0,
        "fpGrowPix": 30,
        "scaleByFwhm": True,
    },
    "warpingConfig": {
        "warpingKernelName": "lanczos3",
        "maskWarpingKernelName": "bilinear",
        "interpLength": 10,
        "cacheSize": 1_000_000,
        "growFullMask": ["EDGE"],
    },
}
# AlardLuptonSubtractConfig.setDefaults (docs/configuration.md#production-overrides): what
# ip_diffim runs in production, and what config/config.yaml ships.
PRODUCTION_OVERRIDES = {"fitForBackground": True, "spatialKernelOrder": 1, "spatialBgOrder": 2}
MODEL_PSF_MATCH_DEFAULTS = {"doAutoPadPsf": True, "autoPadPsfTo": 1.4, "padPsfBy": 0}


@pytest.fixture(scope="module")
def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


@pytest.fixture
def config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_dataclass_defaults_equal_ip_diffim_defaults():
    assert PsfMatchConfig().to_lsst() == REFERENCE_DEFAULTS
    assert ModelPsfMatchConfig().to_lsst() == MODEL_PSF_MATCH_DEFAULTS


def test_delta_function_basis_takes_its_own_defaults():
    """PsfMatchConfigDF.setDefaults: maxConditionNumber 5e6 and PCA on.

    See docs/configuration.md#basis-defaults.
    """
    df = PsfMatchConfig.from_lsst({"kernelBasisSet": "delta-function"})
    assert df.max_condition_number == 5.0e6
    assert df.use_pca_for_spatial_kernel is True
    explicit = PsfMatchConfig.from_lsst(
        {"kernelBasisSet": "delta-function", "maxConditionNumber": 1.0e5}
    )
    assert explicit.max_condition_number == 1.0e5


def test_schema_properties_equal_dataclass_lsst_names(schema):
    block = schema["properties"]["psf_match"]["properties"]
    assert set(block) == set(PsfMatchConfig.lsst_names())
    assert set(block["detectionConfig"]["properties"]) == set(DetectionConfig.lsst_names())
    assert set(block["warpingConfig"]["properties"]) == set(WarpingConfig.lsst_names())
    model = schema["properties"]["model_psf_match"]["properties"]["psf_match"]["properties"]
    assert set(model) == set(ModelPsfMatchConfig.lsst_names())


def test_schema_describes_every_field_and_sets_no_defaults(schema):
    """Defaults live only in the dataclass, so the schema and it cannot disagree."""

    def walk(node, where):
        for name, prop in node.get("properties", {}).items():
            assert "description" in prop, f"{where}.{name} has no description"
            assert "default" not in prop, f"{where}.{name} carries a default"
            walk(prop, f"{where}.{name}")

    walk(schema["properties"]["psf_match"], "psf_match")


def test_shipped_config_equals_production_defaults_and_validates(config, schema):
    validate(copy.deepcopy(config), schema=str(SCHEMA_PATH))
    parsed = PsfMatchConfig.from_lsst(config["psf_match"])
    assert parsed.to_lsst() == {**REFERENCE_DEFAULTS, **PRODUCTION_OVERRIDES}
    assert ModelPsfMatchConfig.from_lsst(config["model_psf_match"]["psf_match"]) == (
        ModelPsfMatchConfig()
    )


def test_reference_defaults_satisfy_schema(config):
    config["psf_match"] = copy.deepcopy(REFERENCE_DEFAULTS)
    validate(config, schema=str(SCHEMA_PATH))


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        (("psf_match", "kernalSize"), 21, "kernalSize"),
        (("psf_match", "spatialKernelOrder"), -1, "spatialKernelOrder"),
        (("psf_match", "kernelBasisSet"), "gaussian", "gaussian"),
        (("psf_match", "sizeCellX"), 16, "sizeCellX"),
        (("psf_match", "maxSpatialIterations"), 6, "maxSpatialIterations"),
        (("psf_match", "fitForBackground"), "yes", "fitForBackground"),
        (("psf_match", "detectionConfig", "detThreshold"), 1.0, "detThreshold"),
        (("psf_match", "warpingConfig", "warpingKernelName"), "cubic", "cubic"),
        (("model_psf_match", "psf_match", "padPsfBy"), 3, "padPsfBy"),
        (("warp", "same_grid_tol"), 0.1, "same_grid_tol"),
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
        ({"kernalSize": 21}, "kernalSize"),
        ({"kernelSize": 20}, "kernelSize must be odd, got 20"),
        ({"kernelSizeMin": 40, "kernelSizeMax": 35}, "kernelSizeMin"),
        ({"alardNGauss": 2}, "alardDegGauss has 3 entries but alardNGauss is 2"),
        ({"spatialKernelOrder": "2"}, "spatialKernelOrder must be of type int"),
        ({"alardSigGauss": [0.7, "x", 3.0]}, "alardSigGauss must be of type float"),
        ({"centralRegularizationStencil": 7}, "centralRegularizationStencil"),
        ({"detectionConfig": {"fpNpixMin": 600}}, "fpNpixMin"),
        ({"warpingConfig": {"maskWarpingKernelName": "nearest"}}, "nearest"),
    ],
)
def test_dataclass_rejects_cross_field_and_type_errors(block, needle):
    with pytest.raises(ConfigError, match=needle):
        PsfMatchConfig.from_lsst(block)


def test_lsst_round_trip_of_a_non_default_config():
    cfg = dataclasses.replace(
        PsfMatchConfig(),
        kernel_size=25,
        alard_deg_gauss=(3, 2, 1),
        detection=DetectionConfig(det_threshold=7.5),
    )
    assert PsfMatchConfig.from_lsst(cfg.to_lsst()) == cfg


def test_configs_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PsfMatchConfig().kernel_size = 23  # type: ignore[misc]
