# psfmatch: PSF-matched image subtraction in the manner of LSST ip_diffim.
# This file is the table of contents only: helpers live in workflow/*_helpers.smk and
# workflow/common.smk, rules in the other workflow/*.smk (one per ip_diffim task), step
# code in src/psfmatch/steps (called by the scripts/ adapters); see README "Where things are".


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/common.smk"
include: "workflow/resources.smk"
include: "workflow/model_psf_helpers.smk"
include: "workflow/report_helpers.smk"
include: "workflow/subtract_helpers.smk"
include: "workflow/solve_helpers.smk"
include: "workflow/dia_helpers.smk"
include: "workflow/simulate.smk"
include: "workflow/prepare.smk"
include: "workflow/solve.smk"
include: "workflow/difference.smk"
include: "workflow/model_psf.smk"
include: "workflow/report.smk"
include: "workflow/subtract.smk"
include: "workflow/dia.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
        model_psf_outputs(),
        dia_outputs(),


# The per-run summary (results/qa/summary.*) and the run-level DIA catalogue
# (results/dia_sources.parquet) are written after every run, also when a pair failed
# (see workflow/report.smk and workflow/dia.smk for why these are handlers, not rules).
onsuccess:
    write_run_summary()
    write_dia_run_catalogue()


onerror:
    write_run_summary()
    write_dia_run_catalogue()
