# Helpers of the DIA-source rules (workflow/dia.smk): their inputs, the products `rule all`
# asks for, and the run-level catalogue the Snakefile's handlers write.
from psfmatch.config import DiaOptions  # noqa: E402

# Cross-field checks of the dia_sources block before any job starts.
DiaOptions.from_dict(config.get("dia_sources"), where="dia_sources")
# DIA sources are measured on a difference image; a preconvolution run ends with a score
# image (a matched-filtered difference), on which the PSF fits would not be valid.
DIA_ACTIVE = not DIFFERENCE.preconvolution
if not DIA_ACTIVE:
    logger.warning(
        "difference.preconvolution: true ends with score images; DIA sources "
        "(detect_dia_sources, qa_dia) are not measured on them"
    )

DIA_PRODUCTS = ("dia_sources.parquet", "dia_cutouts.fits")
DIA_RUN_CATALOGUE = "results/dia_sources.parquet"
# The PSF of the difference, where a rule writes one (e.g. after decorrelation).
DIFFERENCE_PSF = "results/{pair}/difference_psf.fits"


def _written_by_a_rule(pattern):
    return any(pattern in map(str, rule.output) for rule in workflow.rules)


def dia_inputs(wildcards):
    """Named inputs of detect_dia_sources (one place to add more, e.g. a score image).

    The matched template when it is written (output.matched_template), else the warped
    template and the kernel, which the step convolves itself; the difference's PSF file
    when some rule writes it, else the step builds the PSF (dia_sources.psf_source).
    """
    pair = wildcards.pair
    files = {
        "difference": f"results/{pair}/difference.fits",
        "science": f"results/{pair}/input/science.fits",
        "candidates": f"results/{pair}/final/candidates.parquet",
        "psf": f"results/{pair}/detect/psf.json",
    }
    if OUTPUT.matched_template:
        files["template"] = f"results/{pair}/matched_template.fits"
    else:
        files["template"] = f"results/{pair}/warp/template.fits"
        files["kernel"] = f"results/{pair}/kernel.fits"
    if _written_by_a_rule(DIFFERENCE_PSF):
        files["difference_psf"] = DIFFERENCE_PSF.format(pair=pair)
    return files


def dia_outputs():
    """The DIA products of every pair, for the default target (its QA plots: qa_outputs)."""
    if not DIA_ACTIVE:
        return []
    return [f"results/{pair}/{name}" for pair in PAIRS for name in DIA_PRODUCTS]


def write_dia_run_catalogue():
    """results/dia_sources.parquet from the pairs' catalogues that exist (Snakefile handlers)."""
    # imported here: the DIA core loads scipy, and every Snakemake start parses this file
    # (on a cluster, once per job), while only the handlers at the end of a run need it
    from psfmatch.steps.dia import dia_run_catalogue

    Path(DIA_RUN_CATALOGUE).parent.mkdir(parents=True, exist_ok=True)
    status = dia_run_catalogue(
        catalogues={pair: f"results/{pair}/dia_sources.parquet" for pair in PAIRS},
        logs={pair: pair_logs(pair) for pair in PAIRS},
        output_path=DIA_RUN_CATALOGUE,
    )
    left_out = {pair: s for pair, s in status.items() if s != "ok"}
    print(
        f"psfmatch: DIA catalogue of {len(status) - len(left_out)} pair(s) written to "
        f"{DIA_RUN_CATALOGUE}" + (f"; left out: {left_out}" if left_out else ""),
        file=sys.stderr,
    )
