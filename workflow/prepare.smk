# Preparing a pair (ip_diffim's steps before MakeKernelTask solves): the images in the afw
# layout (ingest), on the science grid (warp), kernel candidates detected (detect), vetted
# and cut into stamps (select). Step code: psfmatch.steps.prepare.


rule ingest:
    """Read one input image in any supported layout and write it in the afw MEF layout."""
    input:
        unpack(pair_input),
    output:
        exposure="results/{pair}/input/{role}.fits",
    log:
        "logs/ingest/{pair}.{role}.log",
    benchmark:
        "benchmarks/ingest/{pair}.{role}.tsv"
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("ingest"),
    params:
        reader=pair_reader_options,
        config=step_params("ingest"),
        version=psfmatch.__version__,
    script:
        "../scripts/ingest.py"


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
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    threads: step_threads("warp")
    resources:
        **step_resources("warp"),
    params:
        config=step_params("warp"),
        version=psfmatch.__version__,
    script:
        "../scripts/warp.py"


rule detect:
    """Detect kernel candidates and measure the two PSF FWHMs."""
    input:
        template=rules.warp.output.template,
        science="results/{pair}/input/science.fits",
        mode="results/{pair}/mode/mode.json",
    output:
        candidates="results/{pair}/detect/candidates.parquet",
        psf="results/{pair}/detect/psf.json",
    log:
        "logs/detect/{pair}.log",
    benchmark:
        "benchmarks/detect/{pair}.tsv"
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("detect"),
    params:
        config=step_params("detect"),
        version=psfmatch.__version__,
    script:
        "../scripts/detect.py"


rule select:
    """Vet candidates, assign spatial cells, cut stamps (images in the fit's roles)."""
    input:
        template=rules.warp.output.template,
        science=fit_science_path(),
        candidates=rules.detect.output.candidates,
        psf=rules.detect.output.psf,
        mode="results/{pair}/mode/mode.json",
    output:
        candidates="results/{pair}/select/candidates.parquet",
        stamps="results/{pair}/select/stamps.fits",
    log:
        "logs/select/{pair}.log",
    benchmark:
        "benchmarks/select/{pair}.tsv"
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("select"),
    params:
        config=step_params("select"),
        version=psfmatch.__version__,
    script:
        "../scripts/select.py"
