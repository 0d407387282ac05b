"""Rule model_psf_convolve: convolve an exposure to the target PSF; write it and its metrics."""

# `snakemake` (inputs, outputs, params, log) is injected by Snakemake's script preamble.
from psfmatch.logs import log_to_file
from psfmatch.steps.model_psf import model_psf_convolve

with log_to_file(snakemake.log[0]):  # noqa: F821
    model_psf_convolve(
        inputs=dict(snakemake.input.items()),
        reader=snakemake.params.reader,
        kernel_path=snakemake.input.kernel,
        cells_path=snakemake.input.cells,
        target_psf_path=snakemake.input.target_psf,
        matched_path=snakemake.output.matched,
        metrics_path=snakemake.output.metrics,
        label=f"exposure {snakemake.wildcards.exposure!r}",
    )
