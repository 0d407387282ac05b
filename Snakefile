# psfmatch: PSF-matched image subtraction in the manner of LSST ip_diffim.
# This file is the table of contents only; helpers live in workflow/common.smk,
# rules in workflow/*.smk, step code in src/psfmatch (called by the scripts/ adapters).

configfile: "config/config.yaml"


include: "workflow/common.smk"
include: "workflow/resources.smk"
include: "workflow/simulate.smk"
include: "workflow/ingest.smk"
include: "workflow/kernel.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
