"""Rule simulate: write a seeded synthetic template/science pair and its truth."""

from snakemake.script import snakemake

from psfmatch.logs import log_to_file
from psfmatch.steps import simulate

with log_to_file(snakemake.log[0]):
    simulate(
        simulation=snakemake.params.simulation,
        template_path=snakemake.output.template,
        science_path=snakemake.output.science,
        truth_path=snakemake.output.truth,
        sources_path=snakemake.output.sources,
    )
