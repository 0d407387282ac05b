# ip_diffim's subtraction modes around the kernel fit: the mode decision of a pair
# (subtraction_mode, after warp), the preconvolved science image (preconvolve, only with
# difference.preconvolution) and the final difference or score image (decorrelate, after
# convolve; its own rule so that toggling subtract.doDecorrelation reruns only it and what
# follows). Step code: psfmatch.steps.subtraction, psfmatch.steps.finalize.


rule subtraction_mode:
    """Template coverage, the PSF shape test and the fitting roles of one pair."""
    input:
        template="results/{pair}/warp/template.fits",
        science="results/{pair}/input/science.fits",
    output:
        mode="results/{pair}/mode/mode.json",
    log:
        "logs/subtraction_mode/{pair}.log",
    benchmark:
        "benchmarks/subtraction_mode/{pair}.tsv"
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("subtraction_mode"),
    params:
        config=step_params("subtraction_mode"),
        version=psfmatch.__version__,
    script:
        "../scripts/subtraction_mode.py"


rule preconvolve:
    """The science image correlated with its own PSF (preconvolution only)."""
    input:
        science="results/{pair}/input/science.fits",
        psf="results/{pair}/detect/psf.json",
    output:
        science="results/{pair}/preconvolve/science.fits",
        psf="results/{pair}/preconvolve/psf.fits",
    log:
        "logs/preconvolve/{pair}.log",
    benchmark:
        "benchmarks/preconvolve/{pair}.tsv"
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("preconvolve"),
    params:
        config=step_params("preconvolve"),
        version=psfmatch.__version__,
    script:
        "../scripts/preconvolve.py"


rule decorrelate:
    """Variance rescaling and decorrelation: the final difference (or score) image."""
    input:
        unpack(decorrelate_inputs),
        raw="results/{pair}/convolve/difference.fits",
        raw_metrics="results/{pair}/convolve/metrics.json",
        template="results/{pair}/warp/template.fits",
        science="results/{pair}/input/science.fits",
        subtracted=fit_science_path(),
        kernel="results/{pair}/kernel.fits",
        mode="results/{pair}/mode/mode.json",
        psf="results/{pair}/detect/psf.json",
    output:
        **decorrelate_outputs(),
    log:
        "logs/decorrelate/{pair}.log",
    benchmark:
        "benchmarks/decorrelate/{pair}.tsv"
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    threads: step_threads("decorrelate")
    resources:
        **step_resources("decorrelate"),
    params:
        config=step_params("decorrelate"),
        version=psfmatch.__version__,
    script:
        "../scripts/decorrelate.py"
