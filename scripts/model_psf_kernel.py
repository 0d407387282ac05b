"""Rule model_psf_kernel: fit the kernel matching an exposure's PSF model to the target."""

# `snakemake` (inputs, outputs, params, log) is injected by Snakemake's script preamble.
from psfmatch.logs import log_to_file
from psfmatch.steps.model_psf import model_psf_kernel

with log_to_file(snakemake.log[0]):  # noqa: F821
    files = dict(snakemake.input.items())
    model_psf_kernel(
        inputs=files,
        reader=snakemake.params.reader,
        target_inputs=files,
        config=snakemake.params.config,
        kernel_path=snakemake.output.kernel,
        cells_path=snakemake.output.cells,
        target_psf_path=snakemake.output.target_psf,
        label=f"exposure {snakemake.wildcards.exposure!r}",
    )
