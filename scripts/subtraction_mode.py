"""Rule subtraction_mode: template coverage, the PSF shape test and the fitting roles."""

# `snakemake` (inputs, outputs, params, log) is injected by Snakemake's script preamble.
from psfmatch.logs import log_to_file
from psfmatch.steps.subtraction import subtraction_mode

with log_to_file(snakemake.log[0]):  # noqa: F821
    subtraction_mode(
        template_path=snakemake.input.template,
        science_path=snakemake.input.science,
        mode_path=snakemake.output.mode,
        config=snakemake.params.config,
        label=f"pair {snakemake.wildcards.pair!r}",
    )
