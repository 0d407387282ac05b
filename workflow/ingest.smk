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
    params:
        reader=pair_reader_options,
        version=psfmatch.__version__,
    conda:
        "../envs/psfmatch.yaml"
    container:
        PSFMATCH_CONTAINER
    resources:
        **step_resources("ingest"),
    script:
        "../scripts/ingest.py"
