"""The exposures sheet of model-PSF matching reports bad rows with their line and column."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from psfmatch.errors import ExposuresSheetError
from psfmatch.io.sheets import read_exposures

REPO = Path(__file__).resolve().parents[2]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "exposures.schema.yaml").read_text())


def _sheet(tmp_path: Path, text: str) -> Path:
    for name in ("a.fits", "a.psf", "w.fits"):
        (tmp_path / name).write_bytes(b"")
    path = tmp_path / "exposures.tsv"
    path.write_text(text)
    return path


def test_reads_rows_in_order(tmp_path):
    path = _sheet(tmp_path, "id\timage\tpsf\tgain\n# comment\nb\ta.fits\ta.psf\t4\n"
                            "a\tproduced.fits\t\t\n")
    rows = read_exposures(path, schema=SCHEMA, base_dir=tmp_path, produced=["produced.fits"])
    assert list(rows) == ["b", "a"]
    assert rows["b"] == {"id": "b", "image": "a.fits", "psf": "a.psf", "gain": 4.0, "_line": 3}
    assert "psf" not in rows["a"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("id\timage\nx\tmissing.fits\n", r"line 2, column 'image': file 'missing.fits' does not exist"),
        ("id\timage\tpsf\nx\ta.fits\tnope.psf\n", r"line 2, column 'psf': file 'nope.psf'"),
        ("id\timage\n../x\ta.fits\n", r"line 2, column 'id'"),
        ("id\timage\nx\ta.fits\nx\ta.fits\n", r"line 3: duplicate exposure id 'x' \(first used on line 2\)"),
        ("id\timage\tseeing\nx\ta.fits\t1\n", r"line 1: unknown column\(s\) \['seeing'\]"),
        ("image\na.fits\n", r"line 1: missing column\(s\) \['id'\]"),
        ("id\timage\tgain\nx\ta.fits\tfast\n", r"line 2, column 'gain': expected a number"),
        ("id\timage\tweight\tvariance\nx\ta.fits\tw.fits\tw.fits\n", "at most one of"),
        ("id\timage\tmask_convention\nx\ta.fits\thst\n", r"column 'mask_convention'"),
    ],
)
def test_bad_rows_name_sheet_line_and_column(tmp_path, text, needle):
    path = _sheet(tmp_path, text)
    with pytest.raises(ExposuresSheetError, match=needle) as err:
        read_exposures(path, schema=SCHEMA, base_dir=tmp_path)
    assert "exposures sheet" in str(err.value) and str(path) in str(err.value)


def test_missing_sheet(tmp_path):
    with pytest.raises(ExposuresSheetError, match="exposures sheet .*nope.tsv does not exist"):
        read_exposures(tmp_path / "nope.tsv", schema=SCHEMA)
