"""Rule simulated_psf: write the constant PSF image of a simulated template."""

# `snakemake` (inputs, outputs, params, log) is injected by Snakemake's script preamble.
from psfmatch.logs import log_to_file
from psfmatch.steps.simulate import simulated_psf

with log_to_file(snakemake.log[0]):  # noqa: F821
    simulated_psf(truth_path=snakemake.input.truth, output_path=snakemake.output.psf)
