"""Rule fit_single_kernels: per-candidate kernel fits with residual clipping."""

# `snakemake` (inputs, outputs, params, log) is injected by Snakemake's script preamble.
from psfmatch.logs import log_to_file
from psfmatch.steps.solve import fit_single_kernels
from psfmatch.steps.subtraction import expected_success

label = f"pair {snakemake.wildcards.pair!r}"  # noqa: F821
with log_to_file(snakemake.log[0]), expected_success(snakemake.input.mode, label):  # noqa: F821
    fit_single_kernels(
        candidates_path=snakemake.input.candidates,
        stamps_path=snakemake.input.stamps,
        psf_path=snakemake.input.psf,
        output_candidates=snakemake.output.candidates,
        output_kernels=snakemake.output.kernels,
        config=snakemake.params.config,
        label=label,
        mode_path=snakemake.input.mode,
    )
