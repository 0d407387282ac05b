# QA of each pair (ip_diffim's debug displays as PNGs, registered for the HTML report)
# and the per-run summary table. `snakemake --report report.html` collects them.
#
# The summary is written by the onsuccess/onerror handlers (Snakefile), not by a rule:
# a rule that depends on every pair never runs when one pair fails, even with
# --keep-going, and the summary must say which pair failed and why. The handlers run
# after every job that could run has finished; they read whatever products and step
# logs exist (psfmatch.steps.summary.pair_outcome). Once written, `rule all` takes the
# summary as a report-flagged input, so the report shows it; pairs whose last attempt
# failed are left out of the QA targets (qa_outputs in report_helpers.smk), so the
# report of a partly failed run builds. Step code: psfmatch.steps.report.


rule qa:
    """Plots of one pair: images, candidates, kernel basis/mosaic/spatial model, residuals."""
    input:
        science="results/{pair}/input/science.fits",
        template=rules.warp.output.template,
        difference=final_image_path(),
        metrics="results/{pair}/metrics.json",
        kernel=rules.final_kernel.output.kernel,
        candidates=rules.final_kernel.output.candidates,
        ksum=ksum_tables,
        stamps=rules.select.output.stamps,
    output:
        **qa_plot_outputs("qa"),
    log:
        "logs/qa/{pair}.log",
    benchmark:
        "benchmarks/qa/{pair}.tsv"
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("qa"),
    params:
        config=step_params("qa"),
        version=psfmatch.__version__,
    script:
        "../scripts/qa.py"
