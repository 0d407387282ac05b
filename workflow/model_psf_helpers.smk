# Helpers of model-PSF matching (workflow/model_psf.smk): the exposures sheet, the target
# and the input functions of its rules.
from psfmatch.errors import ConfigError  # noqa: E402
from psfmatch.io.sheets import read_exposures  # noqa: E402

MODEL_TARGET = MODEL_PSF.target
_FILE_COLUMNS = ("image", "psf", "variance", "weight", "error", "mask")


def simulated_psf_paths():
    """Constant template PSF images the simulated_psf rule can write."""
    return [f"results/simulated/{name}/template_psf.fits" for name in SIMULATED]


EXPOSURES_SCHEMA = read_yaml(
    Path(workflow.current_basedir) / "schemas" / "exposures.schema.yaml"
)
EXPOSURES = (
    read_exposures(
        MODEL_PSF.exposures,
        schema=EXPOSURES_SCHEMA,
        produced=simulated_paths() + simulated_psf_paths(),
    )
    if MODEL_PSF.exposures is not None
    else {}
)
if MODEL_TARGET["model"] == "exposure" and MODEL_TARGET["exposure"] not in EXPOSURES:
    raise ConfigError(
        f"model_psf_match.target.exposure {MODEL_TARGET['exposure']!r} is not an id of the "
        f"exposures sheet (ids: {sorted(EXPOSURES)})"
    )
if MODEL_TARGET["model"] == "file" and not (
    Path(MODEL_TARGET["path"]).is_file()
    or MODEL_TARGET["path"] in simulated_psf_paths()
):
    raise ConfigError(
        f"model_psf_match.target.path {MODEL_TARGET['path']!r} does not exist"
    )


wildcard_constraints:
    exposure=_alternation(EXPOSURES),


def exposure_files(wildcards):
    """Image and auxiliary files of one exposure (named inputs)."""
    row = EXPOSURES[wildcards.exposure]
    return {k: row[k] for k in _FILE_COLUMNS if k in row}


def exposure_reader(wildcards):
    """Reader options of one exposure (mask convention, gain)."""
    row = EXPOSURES[wildcards.exposure]
    return {
        "mask_convention": row.get("mask_convention", "afw"),
        "gain": row.get("gain"),
    }


def target_files(wildcards):
    """Files of the target PSF: a model file, or another exposure's image and PSF."""
    if MODEL_TARGET["model"] == "file":
        return {"target_psf": MODEL_TARGET["path"]}
    if MODEL_TARGET["model"] == "exposure":
        row = EXPOSURES[MODEL_TARGET["exposure"]]
        files = {"target_image": row["image"]}
        if "psf" in row:
            files["target_psf"] = row["psf"]
        return files
    return {}


def model_psf_products(exposure):
    """The user-facing products of one exposure."""
    return [
        f"results/psf_matched/{exposure}/{name}"
        for name in ("matched.fits", "kernel.fits", "cells.parquet", "metrics.json")
    ]


def model_psf_outputs():
    """Everything psf_match_all builds."""
    return [
        product for exposure in EXPOSURES for product in model_psf_products(exposure)
    ]
