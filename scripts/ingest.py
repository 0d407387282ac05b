"""Rule ingest: read one input image (any supported layout), write it as afw MEF."""

# `snakemake` (inputs, outputs, params, log) is injected by Snakemake's script preamble.
from psfmatch.logs import log_to_file
from psfmatch.steps.ingest import ingest

with log_to_file(snakemake.log[0]):  # noqa: F821
    ingest(
        inputs=dict(snakemake.input.items()),
        output_path=snakemake.output.exposure,
        label=f"pair {snakemake.wildcards.pair!r} {snakemake.wildcards.role}",
        reader=snakemake.params.reader,
        config=snakemake.params.config,
    )
