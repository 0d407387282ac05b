# Helpers shared by the rule files (library path, config and sheet validation,
# wildcard constraints, input and params functions). No algorithm lives here.
import os
import re
import sys
from pathlib import Path

import yaml
from snakemake.utils import min_version, validate

min_version("9.0")

# Make the library importable at parse time and for every job (script jobs run in a
# fresh interpreter, possibly in a conda env or on a cluster node), without relying on
# `pip install`. The repository root is the directory of the main Snakefile.
PSFMATCH_SRC = str(Path(workflow.basedir) / "src")
if PSFMATCH_SRC not in sys.path:
    sys.path.insert(0, PSFMATCH_SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (PSFMATCH_SRC, os.environ.get("PYTHONPATH", "")) if p
)


# Declared so that Snakemake passes it on to jobs of remote executors (e.g. SLURM).
envvars:
    "PYTHONPATH",


import psfmatch  # noqa: E402
from psfmatch.config import PsfMatchConfig  # noqa: E402
from psfmatch.errors import ConfigError  # noqa: E402
from psfmatch.io_sheet import read_pairs  # noqa: E402


validate(config, schema="schemas/config.schema.yaml")
# Cross-field rules JSON Schema cannot express (odd kernel size, list lengths, ...).
PSF_MATCH = PsfMatchConfig.from_lsst(config["psf_match"])

SIMULATED = config.get("simulate", {})
SIM_ROLES = ("template", "science")


def simulated_paths():
    """Image paths the simulate rule produces (they need not exist when parsing)."""
    return [
        f"results/simulated/{name}/{role}.fits" for name in SIMULATED for role in SIM_ROLES
    ]


with open(Path(workflow.current_basedir) / "schemas" / "pairs.schema.yaml") as _handle:
    PAIRS_SCHEMA = yaml.safe_load(_handle)
PAIRS = read_pairs(config["pairs"], schema=PAIRS_SCHEMA, produced=simulated_paths())


def _alternation(names):
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


wildcard_constraints:
    pair=_alternation(PAIRS),
    sim=_alternation(SIMULATED),
    role="template|science",
    iteration=r"\d+",


def pair_input(wildcards):
    """Input image and auxiliary files of one role of one pair, as named inputs."""
    row = PAIRS[wildcards.pair]
    role = wildcards.role
    files = {"image": row[role]}
    for kind in ("variance", "weight", "error", "mask", "psf"):
        if f"{role}_{kind}" in row:
            files[kind] = row[f"{role}_{kind}"]
    return files


def pair_reader_options(wildcards):
    """Reader options of one role of one pair (mask convention, gain)."""
    row = PAIRS[wildcards.pair]
    role = wildcards.role
    return {
        "mask_convention": row.get(f"{role}_mask_convention", "afw"),
        "gain": row.get(f"{role}_gain"),
    }


def simulation_params(wildcards):
    """The config block of one simulated pair."""
    return SIMULATED[wildcards.sim]


def all_outputs():
    """Everything `snakemake` builds by default."""
    outputs = [f"results/simulated/{name}/truth.json" for name in SIMULATED]
    outputs += [product for pair in PAIRS for product in pair_products(pair)]
    return outputs


# --- which psf_match fields each step reads (LSST names; dotted = nested block).
# A step's params carry only these, so changing one field reruns only its readers.
# Fields of the basis not in use (AL fields for a delta-function run and vice versa,
# PCA fields without usePcaForSpatialKernel) are read by no step.
_BASIS_FIELDS = ["kernelBasisSet", "kernelSize"]
_AL_FIELDS = [
    "scaleByFwhm", "kernelSizeFwhmScaling", "kernelSizeMin", "kernelSizeMax", "alardNGauss",
    "alardDegGauss", "alardSigGauss", "alardGaussBeta", "alardMinSig", "alardMinSigDeconv",
]
_DF_FIELDS = [
    "useRegularization", "regularizationType", "centralRegularizationStencil",
    "forwardRegularizationOrders", "regularizationBorderPenalty", "lambdaType", "lambdaValue",
    "lambdaScaling", "lambdaStepType", "lambdaMin", "lambdaMax", "lambdaStep",
]
_RESIDUAL_FIELDS = [
    "candidateResidualMeanMax", "candidateResidualStdMax", "useCoreStats",
    "candidateCoreRadius", "badMaskPlanes",
]
_SINGLE_FIT_FIELDS = _RESIDUAL_FIELDS + [
    "constantVarianceWeighting", "iterateSingleKernel", "checkConditionNumber",
    "maxConditionNumber", "conditionNumberType", "singleKernelClipping",
]
STEP_FIELDS = {
    "detect": [
        "detectionConfig.detThreshold", "detectionConfig.detThresholdType",
        "detectionConfig.detOnTemplate", "detectionConfig.badMaskPlanes",
        "detectionConfig.fpNpixMin", "detectionConfig.fpNpixMax",
    ],
    "select": _BASIS_FIELDS + [
        "detectionConfig.fpGrowKernelScaling", "detectionConfig.fpGrowPix",
        "detectionConfig.scaleByFwhm", "badMaskPlanes", "sizeCellX", "sizeCellY",
    ],
    "fit_single_kernels": _BASIS_FIELDS + _SINGLE_FIT_FIELDS + ["fitForBackground"],
    "kernel_sum_clip": ["kernelSumClipping", "maxKsumSigma", "nStarPerCell"],
    "spatial_fit": [
        "kernelBasisSet", "spatialModelType", "spatialKernelOrder", "spatialBgOrder",
        "nStarPerCell", "conditionNumberType", "maxSpatialConditionNumber",
        "usePcaForSpatialKernel", "calculateKernelUncertainty",
    ],
    "assess": _RESIDUAL_FIELDS + ["spatialKernelClipping", "nStarPerCell"],
    "convolve": ["nStarPerCell"],
}
# Fields a step reads only under a condition of the resolved config.
_CONDITIONS = {
    "al": PSF_MATCH.kernel_basis_set == "alard-lupton",
    "df": PSF_MATCH.kernel_basis_set == "delta-function",
    "pca": PSF_MATCH.use_pca_for_spatial_kernel,
    "bic": PSF_MATCH.kernel_basis_set == "alard-lupton" and PSF_MATCH.use_bic_for_kernel_basis,
}
CONDITIONAL_STEP_FIELDS = {
    "select": {"al": _AL_FIELDS},
    "fit_single_kernels": {"al": _AL_FIELDS + ["useBicForKernelBasis"], "df": _DF_FIELDS,
                           "bic": ["nStarPerCell"]},  # BIC voters: the active candidates
    # the PCA refit repeats the single-kernel fit and the kernel-sum clipping
    "spatial_fit": {"pca": _SINGLE_FIT_FIELDS + [
        "subtractMeanForPca", "numPrincipalComponents", "kernelSumClipping", "maxKsumSigma",
    ]},
}


def step_fields(step):
    """Every psf_match field `step` reads under the current config."""
    names = list(STEP_FIELDS[step])
    for condition, extra in CONDITIONAL_STEP_FIELDS.get(step, {}).items():
        if _CONDITIONS[condition]:
            names += [n for n in extra if n not in names]
    return names


def psf_match_fields(step):
    """The part of the psf_match block that `step` reads (nested blocks kept nested)."""
    block = config["psf_match"]
    out = {}
    for name in step_fields(step):
        if "." in name:
            outer, inner = name.split(".", 1)
            if inner in block.get(outer, {}):
                out.setdefault(outer, {})[inner] = block[outer][inner]
        elif name in block:
            out[name] = block[name]
    return out


N_ITERATIONS = PSF_MATCH.max_spatial_iterations


def ksum_input(wildcards):
    """Iteration 0 clips the single-kernel table; later ones the previous assessment."""
    i = int(wildcards.iteration)
    if i == 0:
        return f"results/{wildcards.pair}/fit/candidates.parquet"
    return f"results/{wildcards.pair}/iter{i - 1}/assess.parquet"


def final_assessment(wildcards):
    """The assessment of the last spatial iteration."""
    return f"results/{wildcards.pair}/iter{N_ITERATIONS - 1}/assess.parquet"


def pair_products(pair):
    """The user-facing products of one pair."""
    products = [
        f"results/{pair}/difference.fits",
        f"results/{pair}/kernel.fits",
        f"results/{pair}/metrics.json",
    ]
    if config.get("output", {}).get("matched_template", True):
        products.append(f"results/{pair}/matched_template.fits")
    return products


def matched_template_output():
    """The optional matched-template output of the convolve rule."""
    if config.get("output", {}).get("matched_template", True):
        return {"matched": "results/{pair}/matched_template.fits"}
    return {}
