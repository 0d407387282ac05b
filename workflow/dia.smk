# DIA sources: detect and measure what changed on each pair's difference image (ip_diffim's
# detect-and-measure), with cut-outs and their own QA plots. Step code: psfmatch.steps.dia,
# psfmatch.steps.dia_qa; helpers: workflow/dia_helpers.smk.
#
# The run-level catalogue (results/dia_sources.parquet, all pairs with a `pair` column) is
# written by the Snakefile's onsuccess/onerror handlers, next to the run summary, not by a
# rule: a rule over every pair's catalogue never runs when one pair fails (even with
# --keep-going), and one pair's bad subtraction must not cost the others their rows.
# The QA plots are a rule of their own (qa_dia), so that a pair whose DIA step fails keeps
# its kernel and residual plots, and changing a dia_sources field reruns only these two.


rule detect_dia_sources:
    """Detect and measure DIA sources on the difference; write catalogue and cut-outs."""
    input:
        unpack(dia_inputs),
    output:
        catalogue="results/{pair}/dia_sources.parquet",
        cutouts="results/{pair}/dia_cutouts.fits",
    log:
        "logs/detect_dia_sources/{pair}.log",
    benchmark:
        "benchmarks/detect_dia_sources/{pair}.tsv"
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("detect_dia_sources"),
    params:
        config=step_params("detect_dia_sources"),
        version=psfmatch.__version__,
    script:
        "../scripts/detect_dia_sources.py"


rule qa_dia:
    """Plots of one pair's DIA sources: detections on the difference, cut-out gallery."""
    input:
        difference="results/{pair}/difference.fits",
        catalogue=rules.detect_dia_sources.output.catalogue,
        cutouts=rules.detect_dia_sources.output.cutouts,
    output:
        **qa_plot_outputs("qa_dia"),
    log:
        "logs/qa_dia/{pair}.log",
    benchmark:
        "benchmarks/qa_dia/{pair}.tsv"
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("qa_dia"),
    params:
        config=step_params("qa_dia"),
        version=psfmatch.__version__,
    script:
        "../scripts/qa_dia.py"
