"""The pairs sheet reader reports bad rows with their line and column."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from psfmatch.errors import PairsSheetError
from psfmatch.io.sheets import read_pairs

SCHEMA = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "pairs.schema.yaml").read_text()
)


def _sheet(tmp_path: Path, text: str) -> Path:
    for name in ("t.fits", "s.fits", "w.fits", "e.fits", "dir with space/a'b$.fits"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    path = tmp_path / "pairs.tsv"
    path.write_text(text)
    return path


def test_reads_rows_in_order_with_optional_columns(tmp_path):
    path = _sheet(
        tmp_path,
        "pair\ttemplate\tscience\tscience_weight\tscience_gain\n"
        "# a comment line\n"
        "b\tt.fits\ts.fits\tw.fits\t4.0\n"
        "a\tt.fits\tdir with space/a'b$.fits\t\t\n",
    )
    pairs = read_pairs(path, schema=SCHEMA, base_dir=tmp_path)
    assert list(pairs) == ["b", "a"]
    assert pairs["b"] == {
        "pair": "b",
        "template": "t.fits",
        "science": "s.fits",
        "science_weight": "w.fits",
        "science_gain": 4.0,
    }
    assert pairs["a"]["science"] == "dir with space/a'b$.fits"
    assert "science_weight" not in pairs["a"]


def test_produced_files_need_not_exist(tmp_path):
    path = _sheet(tmp_path, "pair\ttemplate\tscience\nsim\tresults/x/t.fits\tresults/x/s.fits\n")
    pairs = read_pairs(
        path, schema=SCHEMA, base_dir=tmp_path, produced=["results/x/t.fits", "results/x/s.fits"]
    )
    assert list(pairs) == ["sim"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("pair\ttemplate\n", r"line 1: missing column\(s\) \['science'\]"),
        ("pair\ttemplate\tscience\tcolour\n", r"unknown column\(s\) \['colour'\]"),
        ("pair\ttemplate\tscience\na\tt.fits\ts.fits\na\tt.fits\ts.fits\n",
         "line 3: duplicate pair id 'a' \\(first used on line 2\\)"),
        ("pair\ttemplate\tscience\na\tt.fits\tmissing.fits\n",
         "line 2, column 'science': file 'missing.fits' does not exist"),
        ("pair\ttemplate\tscience\n../x\tt.fits\ts.fits\n", "line 2, column 'pair'"),
        ("pair\ttemplate\tscience\n.hidden\tt.fits\ts.fits\n", "line 2, column 'pair'"),
        ("pair\ttemplate\tscience\na/b\tt.fits\ts.fits\n", "line 2, column 'pair'"),
        ("pair\ttemplate\tscience\na\tt.fits\n", "line 2: 2 cells but the header has 3"),
        ("pair\ttemplate\tscience\tscience_gain\na\tt.fits\ts.fits\tfour\n",
         "column 'science_gain': expected a number, got 'four'"),
        ("pair\ttemplate\tscience\tscience_gain\na\tt.fits\ts.fits\t-1\n",
         "column 'science_gain'"),
        ("pair\ttemplate\tscience\tscience_weight\tscience_error\na\tt.fits\ts.fits\tw.fits\te.fits\n",
         "give at most one of"),
        ("", "is empty"),
    ],
)
def test_bad_sheets_name_line_and_column(tmp_path, text, needle):
    path = _sheet(tmp_path, text)
    with pytest.raises(PairsSheetError, match=needle) as info:
        read_pairs(path, schema=SCHEMA, base_dir=tmp_path)
    assert str(path) in str(info.value)


def test_missing_sheet(tmp_path):
    with pytest.raises(PairsSheetError, match="does not exist"):
        read_pairs(tmp_path / "nope.tsv", schema=SCHEMA)


def test_missing_file_can_be_recorded_for_that_pair_alone(tmp_path):
    (tmp_path / "t.fits").write_bytes(b"x")
    sheet = tmp_path / "pairs.tsv"
    sheet.write_text("pair\ttemplate\tscience\ta\tt.fits\tgone.fits\nb\tt.fits\tt.fits\n".replace("\ta\t", "\na\t"))
    pairs = read_pairs(sheet, schema=SCHEMA, base_dir=tmp_path, missing_files="record")
    assert list(pairs) == ["a", "b"]
    assert pairs["a"]["missing"] == {
        "science": f"pairs sheet {sheet} line 2, column 'science': file 'gone.fits' does not exist"}
    assert "missing" not in pairs["b"]
