# Helpers shared by all rule files - library path, config and sheet validation, wildcard
# constraints, input and params functions. No algorithm lives here; which config fields
# each step reads is recorded once, in psfmatch.steps.fields (see step_params below).
import os
import re
import sys
from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import min_version

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
from psfmatch.config import (  # noqa: E402
    DetectionOptions,
    DifferenceOptions,
    KernelFitOptions,
    ModelPsfMatchSection,
    OutputOptions,
    PsfMatchConfig,
    SubtractConfig,
    WarpOptions,
    check_kernel_fit,
    check_subtraction,
)
from psfmatch.config.validate import validate_config  # noqa: E402
from psfmatch.errors import ConfigError  # noqa: E402
from psfmatch.io.documents import read_yaml  # noqa: E402
from psfmatch.io.sheets import read_pairs  # noqa: E402
from psfmatch.steps.fields import step_config  # noqa: E402

# The config is config/config.yaml of the working directory, with any --configfile merged
# into it key by key (README "Your own data"). One line per mistake, not the schema.
_CLI_CONFIGS = [str(f) for f in workflow.overwrite_configfiles or []]
CONFIG_FILES = [
    *dict.fromkeys(str(f) for f in workflow.configfiles if str(f) not in _CLI_CONFIGS),
    *_CLI_CONFIGS,
]
if "psf_match" not in config and not Path("config/config.yaml").is_file():
    raise ConfigError(
        f"the config has no psf_match block: the default config config/config.yaml is not "
        f"in the working directory {os.getcwd()} (config read from {CONFIG_FILES}). Run "
        "from the psfmatch folder, or copy its config/config.yaml into <working "
        "directory>/config/; a --configfile is merged into it key by key"
    )
validate_config(
    config,
    read_yaml(Path(workflow.current_basedir) / "schemas" / "config.schema.yaml"),
    configfiles=CONFIG_FILES,
)
# Cross-field rules JSON Schema cannot express (odd kernel size, list lengths, ...), for
# every section, before any job starts.
PSF_MATCH = PsfMatchConfig.from_lsst(config["psf_match"])
WarpOptions.from_dict(config.get("warp"), where="warp")
DetectionOptions.from_dict(config.get("detection"), where="detection")
OUTPUT = OutputOptions.from_dict(config.get("output"), where="output")
MODEL_PSF = ModelPsfMatchSection.from_dict(config.get("model_psf_match"))
SUBTRACT = SubtractConfig.from_lsst(config.get("subtract"), where="subtract")
DIFFERENCE = DifferenceOptions.from_dict(config.get("difference"), where="difference")
check_subtraction(SUBTRACT, DIFFERENCE)
check_kernel_fit(
    config["psf_match"],
    KernelFitOptions.from_dict(config.get("kernel_fit"), where="kernel_fit"),
)

SIMULATED = config.get("simulate") or {}  # null turns the simulation off
SIM_ROLES = ("template", "science")
N_ITERATIONS = PSF_MATCH.max_spatial_iterations


def _sorted(value):
    """`value` with every mapping's keys sorted: params compare alike whatever the YAML order."""
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    return value


def step_params(step):
    """The config fields `step` reads (psfmatch.steps.fields), as the rule's params."""
    return step_config(step, config)


def simulated_paths():
    """Image paths the simulate rule produces (they need not exist when parsing)."""
    return [
        f"results/simulated/{name}/{role}.fits"
        for name in SIMULATED
        for role in SIM_ROLES
    ]


PAIRS_SCHEMA = read_yaml(
    Path(workflow.current_basedir) / "schemas" / "pairs.schema.yaml"
)
PAIRS = read_pairs(
    config["pairs"],
    schema=PAIRS_SCHEMA,
    produced=simulated_paths(),
    missing_files="record",
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
    """Reader options of one role of one pair (mask convention, gain, layout, HDU,
    saturation level, missing files)."""
    row = PAIRS[wildcards.pair]
    role = wildcards.role
    options = {
        "mask_convention": row.get(f"{role}_mask_convention", "afw"),
        "gain": row.get(f"{role}_gain"),
        "layout": row.get(f"{role}_layout", "auto"),
        "missing": {
            column: problem
            for column, problem in row.get("missing", {}).items()
            if column == role or column.startswith(f"{role}_")
        },
    }
    # only when given, so that the params of sheets without these columns stay as they were
    for key in ("hdu", "saturation"):
        if f"{role}_{key}" in row:
            options[key] = row[f"{role}_{key}"]
    return options


def simulation_params(wildcards):
    """The config block of one simulated pair (keys sorted)."""
    return _sorted(SIMULATED[wildcards.sim])


def pair_products(pair):
    """The user-facing products of one pair."""
    products = [
        *(path.format(pair=pair) for path in decorrelate_outputs().values()),
        f"results/{pair}/kernel.fits",
    ]
    if OUTPUT.matched_template:
        products.append(f"results/{pair}/matched_template.fits")
    return products


def matched_template_output():
    """The optional matched-template output of the convolve rule."""
    if OUTPUT.matched_template:
        return {"matched": "results/{pair}/matched_template.fits"}
    return {}


def all_outputs():
    """Everything `snakemake` builds by default (QA targets: workflow/report_helpers.smk)."""
    outputs = [f"results/simulated/{name}/truth.json" for name in SIMULATED]
    outputs += [product for pair in PAIRS for product in pair_products(pair)]
    outputs += qa_outputs()
    return outputs
