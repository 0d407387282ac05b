# The kernel DAG of one pair: ip_diffim's MakeKernelTask and its _solve loop as steps.
# Spatial iterations are separate jobs (iteration wildcard), so each is visible in the
# DAG and rerunnable; an iteration after convergence reproduces the previous one.


rule warp:
    """Resample the template onto the science pixel grid (pass through if identical)."""
    input:
        template="results/{pair}/input/template.fits",
        science="results/{pair}/input/science.fits",
    output:
        template="results/{pair}/warp/template.fits",
        info="results/{pair}/warp/warp.json",
    log:
        "logs/warp/{pair}.log",
    benchmark:
        "benchmarks/warp/{pair}.tsv"
    params:
        warping=config["psf_match"].get("warpingConfig", {}),
        same_grid_tolerance=config.get("warp", {}).get("same_grid_tolerance_pix", 0.01),
        version=psfmatch.__version__,
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    threads: step_threads("warp")
    resources:
        **step_resources("warp"),
    script:
        "../scripts/warp.py"


rule detect:
    """Detect kernel candidates and measure the two PSF FWHMs."""
    input:
        template=rules.warp.output.template,
        science="results/{pair}/input/science.fits",
    output:
        candidates="results/{pair}/detect/candidates.parquet",
        psf="results/{pair}/detect/psf.json",
    log:
        "logs/detect/{pair}.log",
    benchmark:
        "benchmarks/detect/{pair}.tsv"
    params:
        psf_match=psf_match_fields("detect"),
        background_box_size=config.get("detection", {}).get("background_box_size", 64),
        exclude_mask_planes=config.get("detection", {}).get("exclude_mask_planes", []),
        version=psfmatch.__version__,
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("detect"),
    script:
        "../scripts/detect.py"


rule select:
    """Vet candidates, assign spatial cells, cut stamps."""
    input:
        template=rules.warp.output.template,
        science="results/{pair}/input/science.fits",
        candidates=rules.detect.output.candidates,
        psf=rules.detect.output.psf,
    output:
        candidates="results/{pair}/select/candidates.parquet",
        stamps="results/{pair}/select/stamps.fits",
    log:
        "logs/select/{pair}.log",
    benchmark:
        "benchmarks/select/{pair}.tsv"
    params:
        psf_match=psf_match_fields("select"),
        min_snr=config.get("detection", {}).get("min_snr", 10.0),
        exclude_mask_planes=config.get("detection", {}).get("exclude_mask_planes", []),
        max_candidates=config.get("detection", {}).get("max_candidates", 1000),
        version=psfmatch.__version__,
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("select"),
    script:
        "../scripts/select.py"


rule fit_single_kernels:
    """Fit an AL kernel to every candidate; clip on residual statistics."""
    input:
        candidates=rules.select.output.candidates,
        stamps=rules.select.output.stamps,
        psf=rules.detect.output.psf,
    output:
        candidates="results/{pair}/fit/candidates.parquet",
        kernels="results/{pair}/fit/kernels.fits",
    log:
        "logs/fit_single_kernels/{pair}.log",
    benchmark:
        "benchmarks/fit_single_kernels/{pair}.tsv"
    params:
        psf_match=psf_match_fields("fit_single_kernels"),
        version=psfmatch.__version__,
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("fit_single_kernels"),
    script:
        "../scripts/fit_single_kernels.py"


rule kernel_sum_clip:
    """Reject active candidates whose kernel sum is an outlier (one spatial iteration)."""
    input:
        candidates=ksum_input,
    output:
        candidates="results/{pair}/iter{iteration}/ksum.parquet",
    log:
        "logs/kernel_sum_clip/{pair}.iter{iteration}.log",
    benchmark:
        "benchmarks/kernel_sum_clip/{pair}.iter{iteration}.tsv"
    params:
        psf_match=psf_match_fields("kernel_sum_clip"),
        version=psfmatch.__version__,
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("kernel_sum_clip"),
    script:
        "../scripts/kernel_sum_clip.py"


rule spatial_fit:
    """Joint spatial kernel and background fit (PCA basis and refit first, if configured)."""
    input:
        candidates="results/{pair}/iter{iteration}/ksum.parquet",
        kernels=rules.fit_single_kernels.output.kernels,
        stamps=rules.select.output.stamps,
    output:
        kernel="results/{pair}/iter{iteration}/kernel.fits",
        candidates="results/{pair}/iter{iteration}/spatial.parquet",
    log:
        "logs/spatial_fit/{pair}.iter{iteration}.log",
    benchmark:
        "benchmarks/spatial_fit/{pair}.iter{iteration}.tsv"
    params:
        psf_match=psf_match_fields("spatial_fit"),
        version=psfmatch.__version__,
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("spatial_fit"),
    script:
        "../scripts/spatial_fit.py"


rule assess:
    """Residuals of the spatial model per candidate; reject and promote."""
    input:
        candidates=rules.spatial_fit.output.candidates,
        stamps=rules.select.output.stamps,
        kernel=rules.spatial_fit.output.kernel,
    output:
        candidates="results/{pair}/iter{iteration}/assess.parquet",
    log:
        "logs/assess/{pair}.iter{iteration}.log",
    benchmark:
        "benchmarks/assess/{pair}.iter{iteration}.tsv"
    params:
        psf_match=psf_match_fields("assess"),
        version=psfmatch.__version__,
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("assess"),
    script:
        "../scripts/assess.py"


rule final_kernel:
    """Spatial fit on the candidates that survived the last assessment."""
    input:
        candidates=final_assessment,
        kernels=rules.fit_single_kernels.output.kernels,
        stamps=rules.select.output.stamps,
    output:
        kernel="results/{pair}/kernel.fits",
        candidates="results/{pair}/final/candidates.parquet",
    log:
        "logs/final_kernel/{pair}.log",
    benchmark:
        "benchmarks/final_kernel/{pair}.tsv"
    params:
        psf_match=psf_match_fields("spatial_fit"),
        version=psfmatch.__version__,
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("final_kernel"),
    script:
        "../scripts/spatial_fit.py"


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
        psf_match=psf_match_fields("convolve"),
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
