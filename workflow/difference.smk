# The difference image (ip_diffim's convolve and subtract). Step code:
# psfmatch.steps.difference.


rule convolve:
    """Convolve the image the mode says with the kernel, subtract: the raw difference."""
    input:
        template=rules.warp.output.template,
        science=fit_science_path(),
        kernel=rules.final_kernel.output.kernel,
        candidates=rules.final_kernel.output.candidates,
        mode="results/{pair}/mode/mode.json",
    output:
        **matched_template_output(),
        difference="results/{pair}/convolve/difference.fits",
        metrics="results/{pair}/convolve/metrics.json",
    log:
        "logs/convolve/{pair}.log",
    benchmark:
        "benchmarks/convolve/{pair}.tsv"
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    threads: step_threads("convolve")
    resources:
        **step_resources("convolve"),
    params:
        config=step_params("convolve"),
        version=psfmatch.__version__,
    script:
        "../scripts/convolve.py"
