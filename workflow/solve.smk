# Solving for the kernel: ip_diffim's MakeKernelTask and its _solve loop as steps. Spatial
# iterations are separate jobs (iteration wildcard), so each is visible in the DAG and
# rerunnable; an iteration after convergence reproduces the previous one. Step code:
# psfmatch.steps.solve.


rule fit_single_kernels:
    """Fit an AL kernel to every candidate; clip on residual statistics."""
    input:
        candidates=rules.select.output.candidates,
        stamps=rules.select.output.stamps,
        psf=rules.detect.output.psf,
        mode="results/{pair}/mode/mode.json",
    output:
        candidates="results/{pair}/fit/candidates.parquet",
        kernels="results/{pair}/fit/kernels.fits",
    log:
        "logs/fit_single_kernels/{pair}.log",
    benchmark:
        "benchmarks/fit_single_kernels/{pair}.tsv"
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("fit_single_kernels"),
    params:
        config=step_params("fit_single_kernels"),
        version=psfmatch.__version__,
    script:
        "../scripts/fit_single_kernels.py"


rule kernel_sum_clip:
    """Reject active candidates whose kernel sum is an outlier (one spatial iteration)."""
    input:
        candidates=ksum_input,
        mode="results/{pair}/mode/mode.json",
    output:
        candidates="results/{pair}/iter{iteration}/ksum.parquet",
    log:
        "logs/kernel_sum_clip/{pair}.iter{iteration}.log",
    benchmark:
        "benchmarks/kernel_sum_clip/{pair}.iter{iteration}.tsv"
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("kernel_sum_clip"),
    params:
        config=step_params("kernel_sum_clip"),
        version=psfmatch.__version__,
    script:
        "../scripts/kernel_sum_clip.py"


rule spatial_fit:
    """Joint spatial kernel and background fit (PCA basis and refit first, if configured)."""
    input:
        candidates="results/{pair}/iter{iteration}/ksum.parquet",
        kernels=rules.fit_single_kernels.output.kernels,
        stamps=rules.select.output.stamps,
        mode="results/{pair}/mode/mode.json",
    output:
        kernel="results/{pair}/iter{iteration}/kernel.fits",
        candidates="results/{pair}/iter{iteration}/spatial.parquet",
    log:
        "logs/spatial_fit/{pair}.iter{iteration}.log",
    benchmark:
        "benchmarks/spatial_fit/{pair}.iter{iteration}.tsv"
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("spatial_fit"),
    params:
        config=step_params("spatial_fit"),
        version=psfmatch.__version__,
    script:
        "../scripts/spatial_fit.py"


rule assess:
    """Residuals of the spatial model per candidate; reject and promote."""
    input:
        candidates=rules.spatial_fit.output.candidates,
        stamps=rules.select.output.stamps,
        kernel=rules.spatial_fit.output.kernel,
        mode="results/{pair}/mode/mode.json",
    output:
        candidates="results/{pair}/iter{iteration}/assess.parquet",
    log:
        "logs/assess/{pair}.iter{iteration}.log",
    benchmark:
        "benchmarks/assess/{pair}.iter{iteration}.tsv"
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("assess"),
    params:
        config=step_params("assess"),
        version=psfmatch.__version__,
    script:
        "../scripts/assess.py"


rule final_kernel:
    """Spatial fit on the candidates that survived the last assessment."""
    input:
        candidates=final_assessment,
        kernels=rules.fit_single_kernels.output.kernels,
        stamps=rules.select.output.stamps,
        mode="results/{pair}/mode/mode.json",
    output:
        kernel="results/{pair}/kernel.fits",
        candidates="results/{pair}/final/candidates.parquet",
    log:
        "logs/final_kernel/{pair}.log",
    benchmark:
        "benchmarks/final_kernel/{pair}.tsv"
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("final_kernel"),
    params:
        config=step_params("spatial_fit"),
        version=psfmatch.__version__,
    script:
        "../scripts/spatial_fit.py"
