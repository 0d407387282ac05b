"""The workflow's steps: one function per rule, files in → array core → files out.

Each ``scripts/<rule>.py`` adapter calls one function here; the functions are plain
Python, importable and testable without Snakemake, and only :mod:`psfmatch.io` touches
files. Grouped by ip_diffim task:

==========================  ==========================================================
module                      steps (= rules)
==========================  ==========================================================
:mod:`.simulate`            ``simulate``, ``simulated_psf`` (the demo inputs)
:mod:`.ingest`              ``ingest``
:mod:`.prepare`             ``warp``, ``detect``, ``select``
:mod:`.solve`               ``fit_single_kernels``, ``kernel_sum_clip``, ``spatial_fit``
                            (also rule ``final_kernel``), ``assess``
:mod:`.difference`          ``convolve``
:mod:`.subtraction`         ``subtraction_mode``, ``preconvolve``
:mod:`.finalize`            ``decorrelate`` (the final difference or score image)
:mod:`.model_psf`           ``model_psf_kernel``, ``model_psf_convolve``
:mod:`.report`              ``qa``
:mod:`.summary`             the run summary (``pair_outcome``, ``qa_summary``)
:mod:`.fields`              which config fields each step reads (the one record)
==========================  ==========================================================

This package imports nothing itself, so that the workflow can read :mod:`.fields` at
parse time without loading the numerical code, and each job imports only the modules
its step needs (a job's start-up is part of every step's cost). It only sets the
linear-algebra thread defaults Snakemake gives its jobs (:mod:`psfmatch.threads`), for
the processes that run steps outside Snakemake.
"""

from psfmatch.threads import default_blas_threads

default_blas_threads()
