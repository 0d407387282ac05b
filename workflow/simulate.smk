rule simulate:
    """Seeded synthetic template/science pair with a known spatially varying kernel."""
    output:
        template="results/simulated/{sim}/template.fits",
        science="results/simulated/{sim}/science.fits",
        truth="results/simulated/{sim}/truth.json",
        sources="results/simulated/{sim}/sources.parquet",
    log:
        "logs/simulate/{sim}.log",
    benchmark:
        "benchmarks/simulate/{sim}.tsv"
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("simulate"),
    params:
        simulation=simulation_params,
        version=psfmatch.__version__,
    script:
        "../scripts/simulate.py"
