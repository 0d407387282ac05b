"""Rule simulate: write a seeded synthetic template/science pair and its truth."""

# `snakemake` (inputs, outputs, params, log) is injected by Snakemake's script preamble.
from psfmatch.logs import log_to_file
from psfmatch.steps.simulate import simulate

with log_to_file(snakemake.log[0]):  # noqa: F821
    simulate(
        simulation=snakemake.params.simulation,
        template_path=snakemake.output.template,
        science_path=snakemake.output.science,
        truth_path=snakemake.output.truth,
        sources_path=snakemake.output.sources,
    )
