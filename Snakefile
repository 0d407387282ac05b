# psfmatch: PSF-matched image subtraction in the manner of LSST ip_diffim.
# This file is the table of contents only; helpers live in workflow/common.smk,
# rules in workflow/*.smk, step code in src/psfmatch (called by the scripts/ adapters).

configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/common.smk"
include: "workflow/resources.smk"
include: "workflow/simulate.smk"
include: "workflow/ingest.smk"
include: "workflow/kernel.smk"
include: "workflow/model_psf.smk"
include: "workflow/qa.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
        model_psf_outputs(),


# The per-run summary (results/qa/summary.*) is written after every run, also when a
# pair failed (see workflow/qa.smk for why this is a handler and not a rule).
onsuccess:
    write_run_summary()


onerror:
    write_run_summary()
