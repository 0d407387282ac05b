# Helpers shared by the rule files (library path, config and sheet validation,
# wildcard constraints, input and params functions). No algorithm lives here.
import os
import re
import sys
from pathlib import Path

import yaml
from snakemake.logging import logger
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
PAIRS = read_pairs(
    config["pairs"], schema=PAIRS_SCHEMA, produced=simulated_paths(), missing_files="record"
)
# A missing input file costs its pair only: that pair's ingest job fails naming it.
for _pair, _row in PAIRS.items():
    for _problem in _row.get("missing", {}).values():
        logger.warning(f"pair {_pair!r} will fail: {_problem}")


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
    missing = row.get("missing", {})
    files = {"image": row[role]}
    for kind in ("variance", "weight", "error", "mask", "psf"):
        if f"{role}_{kind}" in row:
            files[kind] = row[f"{role}_{kind}"]
    # Missing files are not inputs (Snakemake would stop the whole run); the ingest
    # step receives them as params and fails this pair alone.
    column = {kind: role if kind == "image" else f"{role}_{kind}" for kind in files}
    return {kind: path for kind, path in files.items() if column[kind] not in missing}


def pair_reader_options(wildcards):
    """Reader options of one role of one pair (mask convention, gain)."""
    row = PAIRS[wildcards.pair]
    role = wildcards.role
    return {
        "mask_convention": row.get(f"{role}_mask_convention", "afw"),
        "gain": row.get(f"{role}_gain"),
        "layout": row.get(f"{role}_layout", "auto"),
        "missing": {
            column: problem
            for column, problem in row.get("missing", {}).items()
            if column == role or column.startswith(f"{role}_")
        },
    }


def simulation_params(wildcards):
    """The config block of one simulated pair."""
    return SIMULATED[wildcards.sim]


def all_outputs():
    """Everything `snakemake` builds by default."""
    outputs = [f"results/simulated/{name}/truth.json" for name in SIMULATED]
    outputs += [product for pair in PAIRS for product in pair_products(pair)]
    outputs += qa_outputs()
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


# --- model-PSF matching (workflow/model_psf.smk): exposures sheet, target, inputs.
from psfmatch.config import ModelPsfMatchConfig  # noqa: E402
from psfmatch.io_sheet import read_exposures  # noqa: E402
from psfmatch.steps import model_kernel_config  # noqa: E402

MODEL_PSF = config.get("model_psf_match", {})
MODEL_TARGET = MODEL_PSF.get("target", {"model": "gaussian", "fwhm": 5.0})
# Cross-field checks before any job (odd kernel size, even padPsfBy, unsupported options).
ModelPsfMatchConfig.from_lsst(MODEL_PSF.get("psf_match", {}), where="model_psf_match.psf_match")
model_kernel_config(MODEL_PSF.get("kernel", {}))


def simulated_psf_paths():
    """Constant template PSF images the simulated_psf rule can write."""
    return [f"results/simulated/{name}/template_psf.fits" for name in SIMULATED]


with open(Path(workflow.current_basedir) / "schemas" / "exposures.schema.yaml") as _handle:
    EXPOSURES_SCHEMA = yaml.safe_load(_handle)
EXPOSURES = (
    read_exposures(MODEL_PSF["exposures"], schema=EXPOSURES_SCHEMA,
                   produced=simulated_paths() + simulated_psf_paths())
    if "exposures" in MODEL_PSF
    else {}
)
if MODEL_TARGET["model"] == "exposure" and MODEL_TARGET["exposure"] not in EXPOSURES:
    raise ConfigError(
        f"model_psf_match.target.exposure {MODEL_TARGET['exposure']!r} is not an id of the "
        f"exposures sheet (ids: {sorted(EXPOSURES)})"
    )
if MODEL_TARGET["model"] == "file" and not (
    Path(MODEL_TARGET["path"]).is_file() or MODEL_TARGET["path"] in simulated_psf_paths()
):
    raise ConfigError(f"model_psf_match.target.path {MODEL_TARGET['path']!r} does not exist")

_FILE_COLUMNS = ("image", "psf", "variance", "weight", "error", "mask")


wildcard_constraints:
    exposure=_alternation(EXPOSURES),


def exposure_files(wildcards):
    """Image and auxiliary files of one exposure (named inputs)."""
    row = EXPOSURES[wildcards.exposure]
    return {k: row[k] for k in _FILE_COLUMNS if k in row}


def exposure_reader(wildcards):
    """Reader options of one exposure (mask convention, gain)."""
    row = EXPOSURES[wildcards.exposure]
    return {"mask_convention": row.get("mask_convention", "afw"), "gain": row.get("gain")}


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
    return [product for exposure in EXPOSURES for product in model_psf_products(exposure)]


# ====================================================================== QA (issue 6)
# Targets of workflow/qa.smk and the run summary written by the Snakefile's handlers.
STEP_FIELDS["qa"] = ["sizeCellX", "sizeCellY", "nStarPerCell", "badMaskPlanes"]

import mimetypes  # noqa: E402

from psfmatch.logs import read_failure  # noqa: E402
from psfmatch.steps import QA_PLOTS, pair_outcome, qa_summary  # noqa: E402

#: Report subcategory and label of each QA plot (captions: workflow/report/qa_<key>.rst).
QA_REPORT = {
    "images": ("1 images", "science, template, difference"),
    "candidates": ("1 images", "kernel candidates and cells"),
    "kernel_basis": ("2 kernel", "kernel basis"),
    "kernel_mosaic": ("2 kernel", "kernel mosaic (5x5)"),
    "spatial_model": ("2 kernel", "spatial model and background"),
    "kernel_sum": ("2 kernel", "kernel-sum distribution"),
    "residual_histogram": ("3 residuals", "difference / sigma histogram"),
    "worst_stamps": ("3 residuals", "worst candidates"),
}
QA_SUMMARY = {"table": "results/qa/summary.parquet", "html": "results/qa/summary.html"}
# Snakemake's report() flag; the Snakefile parser takes `report` at the start of a line
# for the global `report:` directive, so the helpers below call it by this name.
report_flag = report
# The summary is an input of `all` (in the Snakefile), hence an absolute caption path.
# The report embeds files with the type mimetypes guesses; Parquet is not in its table.
mimetypes.add_type("application/vnd.apache.parquet", ".parquet")
QA_SUMMARY_CAPTION = str(Path(workflow.basedir) / "workflow" / "report" / "qa_summary.rst")


def qa_plot_path(pair, key):
    return f"results/{pair}/qa/{key}.png"


def qa_plot_outputs():
    """Named, report-flagged outputs of rule qa (one category per pair)."""
    return {
        key: report_flag(
            qa_plot_path("{pair}", key),
            caption=f"report/qa_{key}.rst",
            category="{pair}",
            subcategory=QA_REPORT[key][0],
            labels={"plot": QA_REPORT[key][1]},
        )
        for key in QA_PLOTS
    }


def ksum_tables(wildcards):
    """The kernel-sum tables of every spatial iteration (their clip statistics)."""
    return [f"results/{wildcards.pair}/iter{i}/ksum.parquet" for i in range(N_ITERATIONS)]


_LOG_SUFFIX = r"(\.(template|science|iter\d+))?\.log"


def pair_logs(pair):
    """Step logs of one pair: logs/<step>/<pair>[.<role>|.iter<i>].log -> step name."""
    pattern = re.compile(re.escape(pair) + _LOG_SUFFIX)
    return {
        str(path): path.parent.name
        for path in sorted(Path("logs").glob(f"*/{pair}*.log"))
        if pattern.fullmatch(path.name)
    }


def qa_last_attempt_failed(pair):
    """True if the pair lacks a QA plot and one of its step logs records an error.

    Such a pair gets no QA targets, so that `snakemake --report` builds from what exists
    (a report-flagged file that is missing stops the report). A pair that succeeds on a
    later run gets its plots on the run after (its row in the summary says plots 0/8).
    """
    if all(Path(qa_plot_path(pair, key)).is_file() for key in QA_PLOTS):
        return False
    return any(read_failure(path) is not None for path in pair_logs(pair))


def qa_outputs():
    """QA plots of every pair not known to have failed, and the run summary once written."""
    outputs = [
        qa_plot_path(pair, key)
        for pair in PAIRS
        if not qa_last_attempt_failed(pair)
        for key in QA_PLOTS
    ]
    if all(Path(path).is_file() for path in QA_SUMMARY.values()):
        outputs += [
            report_flag(QA_SUMMARY["html"], caption=QA_SUMMARY_CAPTION, category="run summary",
                   labels={"table": "summary (HTML)"}),
            report_flag(QA_SUMMARY["table"], caption=QA_SUMMARY_CAPTION, category="run summary",
                   labels={"table": "summary (Parquet)"}),
        ]
    return outputs


def write_run_summary():
    """One row per pair from the products and logs that exist (Snakefile handlers)."""
    rows = [
        pair_outcome(
            pair=pair,
            metrics_path=f"results/{pair}/metrics.json",
            plot_paths=[qa_plot_path(pair, key) for key in QA_PLOTS],
            logs=pair_logs(pair),
        )
        for pair in PAIRS
    ]
    Path(QA_SUMMARY["table"]).parent.mkdir(parents=True, exist_ok=True)
    qa_summary(rows=rows, table_path=QA_SUMMARY["table"], html_path=QA_SUMMARY["html"])
    for row in rows:
        if row["status"] != "ok":
            print(f"psfmatch: pair {row['pair']!r} {row['status']}: {row['error']}", file=sys.stderr)
    print(f"psfmatch: run summary written to {QA_SUMMARY['table']} and {QA_SUMMARY['html']}",
          file=sys.stderr)
# ================================================================== end QA (issue 6)
