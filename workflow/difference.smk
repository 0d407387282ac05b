# The difference image (ip_diffim's convolve and subtract). Step code:
# psfmatch.steps.difference.


rule convolve:
    """Convolve the warped template with the kernel, subtract, write products."""
    input:
        template=rules.warp.output.template,
        science="results/{pair}/input/science.fits",
        kernel=rules.final_kernel.output.kernel,
        candidates=rules.final_kernel.output.candidates,
    output:
        **matched_template_output(),
        difference="results/{pair}/difference.fits",
        metrics="results/{pair}/metrics.json",
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
