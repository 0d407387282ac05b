"""Compare two psfmatch result trees file by file: identical bytes, or identical content.

Usage: python .ci/compare_products.py REFERENCE_RESULTS OTHER_RESULTS [--only PAIR ...]

Every file of the reference tree (``results/``) must exist in the other one and be equal:
byte for byte, or, where bytes differ, FITS compared with ``FITSDiff(rtol=0, atol=0)``
(every header card and every pixel), Parquet tables column by column with exact equality
(and identical metadata), JSON documents as parsed values. Exit status 1 on any
difference, with a line per differing file.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
from pathlib import Path

import numpy as np
from astropy.io.fits import FITSDiff

from psfmatch import io


def _same_table(a: Path, b: Path) -> str | None:
    ta, tb = io.read_table(a), io.read_table(b)
    if ta.columns.keys() != tb.columns.keys():
        return f"columns {sorted(ta.columns)} != {sorted(tb.columns)}"
    for name in ta.columns:
        a, b = ta.columns[name], tb.columns[name]
        if not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
            return f"column {name!r} differs"
    if ta.units != tb.units or ta.metadata != tb.metadata:
        return "units or metadata differ"
    return None


def compare(reference: Path, other: Path, only: list[str] | None = None) -> list[str]:
    problems = []
    identical = 0
    files = sorted(p for p in reference.rglob("*")
                   if p.is_file() and not p.name.startswith(".tmp-"))
    if only:
        files = [p for p in files if p.relative_to(reference).parts[0] in only]
    if not files:
        return [f"no files under {reference}"]
    for ref in files:
        rel = ref.relative_to(reference)
        cand = other / rel
        if not cand.is_file():
            problems.append(f"{rel}: missing in {other}")
            continue
        if filecmp.cmp(ref, cand, shallow=False):
            identical += 1
            continue
        suffix = "".join(rel.suffixes)
        if suffix.endswith(".fits"):
            diff = FITSDiff(str(ref), str(cand), rtol=0.0, atol=0.0)
            if not diff.identical:
                problems.append(f"{rel}: FITS content differs\n{diff.report()[:2000]}")
        elif suffix.endswith(".parquet"):
            why = _same_table(ref, cand)
            if why:
                problems.append(f"{rel}: {why}")
        elif suffix.endswith(".json"):
            if io.read_json(ref) != io.read_json(cand):
                problems.append(f"{rel}: JSON content differs")
        else:
            problems.append(f"{rel}: bytes differ")
    print(f"compared {len(files)} files under {reference} with {other}: "
          f"{identical} byte-identical, {len(files) - identical - len(problems)} equal in "
          f"content (FITSDiff rtol=0 / same table / same JSON), {len(problems)} different")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path)
    parser.add_argument("other", type=Path)
    parser.add_argument("--only", nargs="*", help="pair folders to compare (default: all)")
    args = parser.parse_args()
    problems = compare(args.reference, args.other, args.only)
    for line in problems:
        print("DIFFERENT:", line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
