# Model-PSF matching for coadds (ip_diffim ModelPsfMatchTask, docs/model-psf.md), target
# `psf_match_all`: every exposure of the sheet `model_psf_match.exposures` is convolved so
# that its PSF model becomes `model_psf_match.target`. Two jobs per exposure:
# model_psf_kernel (PSF models -> kernel) and model_psf_convolve (image -> matched image).
# Helpers (sheet, target, input functions) are in model_psf_helpers.smk. Step code:
# psfmatch.steps.model_psf.


rule psf_match_all:
    """Model-PSF matching of every exposure of the exposures sheet."""
    input:
        model_psf_outputs(),


rule simulated_psf:
    """Constant PSF image of a simulated template (for the model-PSF matching demo)."""
    input:
        truth="results/simulated/{sim}/truth.json",
    output:
        psf="results/simulated/{sim}/template_psf.fits",
    log:
        "logs/simulated_psf/{sim}.log",
    benchmark:
        "benchmarks/simulated_psf/{sim}.tsv"
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("simulated_psf"),
    params:
        version=psfmatch.__version__,
    script:
        "../scripts/simulated_psf.py"


rule model_psf_kernel:
    """Fit the kernel that matches the exposure's PSF model to the target (ModelPsfMatchTask)."""
    input:
        unpack(exposure_files),
        unpack(target_files),
    output:
        kernel="results/psf_matched/{exposure}/kernel.fits",
        cells="results/psf_matched/{exposure}/cells.parquet",
        target_psf="results/psf_matched/{exposure}/target_psf.fits",
    log:
        "logs/model_psf_kernel/{exposure}.log",
    benchmark:
        "benchmarks/model_psf_kernel/{exposure}.tsv"
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("model_psf_kernel"),
    params:
        reader=exposure_reader,
        config=step_params("model_psf_kernel"),
        version=psfmatch.__version__,
    script:
        "../scripts/model_psf_kernel.py"


rule model_psf_convolve:
    """Convolve the exposure with the kernel (normalised per pixel); attach the target PSF."""
    input:
        unpack(exposure_files),
        kernel=rules.model_psf_kernel.output.kernel,
        cells=rules.model_psf_kernel.output.cells,
        target_psf=rules.model_psf_kernel.output.target_psf,
    output:
        matched="results/psf_matched/{exposure}/matched.fits",
        metrics="results/psf_matched/{exposure}/metrics.json",
    log:
        "logs/model_psf_convolve/{exposure}.log",
    benchmark:
        "benchmarks/model_psf_convolve/{exposure}.tsv"
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    threads: step_threads("model_psf_convolve")
    resources:
        **step_resources("model_psf_convolve"),
    params:
        reader=exposure_reader,
        version=psfmatch.__version__,
    script:
        "../scripts/model_psf_convolve.py"
