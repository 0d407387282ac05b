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
        difference="results/{pair}/difference.fits",
        metrics="results/{pair}/metrics.json",
        **matched_template_output(),
    log:
        "logs/convolve/{pair}.log",
    benchmark:
        "benchmarks/convolve/{pair}.tsv"
    params:
        config=step_params("convolve"),
        version=psfmatch.__version__,
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    threads: step_threads("convolve")
    resources:
        **step_resources("convolve"),
    script:
        "../scripts/convolve.py"
