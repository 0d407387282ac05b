"""Write a scratch workflow directory with small simulated pairs (for the CI cluster checks).

Usage: python .ci/make_workdir.py DIR [--pairs N]

DIR/config/config.yaml is the shipped config with its `simulate` block replaced by N
seeded 512² pairs dense in bright stars (as tests/workflow uses), DIR/config/pairs.tsv
lists them and DIR/config/exposures.tsv their templates for model-PSF matching. Run the workflow on it with `snakemake --snakefile <repo>/Snakefile --directory DIR`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    names = [f"ci{i}" for i in range(1, args.pairs + 1)]
    config["simulate"] = {
        name: {"seed": 3 + 4 * i, "shape": [512, 512], "star_density": 6000.0, "flux_min": 2000.0}
        for i, name in enumerate(names)
    }
    config["pairs"] = "config/pairs.tsv"
    (args.workdir / "config").mkdir(parents=True, exist_ok=True)
    (args.workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    rows = "".join(f"{n}\tresults/simulated/{n}/template.fits\tresults/simulated/{n}/science.fits\n"
                   for n in names)
    (args.workdir / "config" / "pairs.tsv").write_text("pair\ttemplate\tscience\n" + rows)
    # Model-PSF matching of each simulated template (its constant PSF) to the shipped target.
    config["model_psf_match"]["exposures"] = "config/exposures.tsv"
    (args.workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    exposures = "".join(
        f"{n}_template\tresults/simulated/{n}/template.fits\tresults/simulated/{n}/template_psf.fits\n"
        for n in names)
    (args.workdir / "config" / "exposures.tsv").write_text("id\timage\tpsf\n" + exposures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
