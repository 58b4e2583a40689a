"""The inbox leaves no file behind in silence (issue 13, items 3 and 5).

Every file dropped in the inbox is imported (``done/``), rejected (``rejected/`` with its
reason) or, for what the importer cannot read, moved to ``rejected/`` with a reason naming the
formats it reads. Only hidden files, Office lock files and sub-folders stay, with a warning.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import geopandas as gpd
import pyogrio
import pytest
from shapely.geometry import Point

from pipeline.ops.field_import import describe_inbox, import_inbox, inbox_files
from pipeline.ops.workspace import Workspace
from pipeline.registry.io.registry_file import load_registry, save_registry
from pipeline.schema import P, Verdict
from tests.field_returns import CRS, NOW, patch_ids, township_state, write_xls

ID1, ID2, ID3 = patch_ids(3)


@pytest.fixture
def workspace(tmp_path):
    """A workspace whose registry holds three pending patches, an empty inbox, and the
    parts of the configuration the inbox stage reads."""
    ws = Workspace(tmp_path / "out")
    ws.ensure()
    save_registry(ws.registry, township_state(3))
    inbox = ws.root / "inbox"
    inbox.mkdir()
    cfg = SimpleNamespace(
        field_returns=SimpleNamespace(inbox=inbox, encoding=None, photo_radius_m=100.0),
        area=SimpleNamespace(crs=CRS),
    )
    return cfg, ws, inbox


def _shapefile_return(folder, stem, pid):
    """A Shapefile return (.shp, .shx, .dbf, .prj, .cpg) for one patch."""
    frame = gpd.GeoDataFrame(
        {"patch_id": [pid], "verdict": ["合法"]}, geometry=[Point(0, 0)], crs=CRS
    )
    pyogrio.write_dataframe(frame, folder / f"{stem}.shp", encoding="UTF-8")


def _run(cfg, ws):
    return import_inbox(cfg, ws, run_id="r2", now=NOW)


def test_every_inbox_file_is_imported_rejected_or_reported(workspace, caplog):
    """An .xls and a Shapefile are imported (the Shapefile with its sidecars); a .pdf, a .doc
    and a .dbf without its .shp go to rejected/ with a reason naming the formats read; a
    hidden file, an Excel lock file and a folder stay, each with a WARNING."""
    cfg, ws, inbox = workspace
    write_xls(["图斑号", "认定结果"], [[ID1, "违法"]], inbox / "城关镇.xls")
    _shapefile_return(inbox, "东村", ID2)
    (inbox / "核查说明.pdf").write_bytes(b"%PDF-1.4")
    (inbox / "通知.doc").write_bytes(b"\xd0\xcf\x11\xe0")
    (inbox / "lonely.dbf").write_bytes(b"\x03")
    (inbox / ".DS_Store").write_bytes(b"x")
    (inbox / "~$城关镇.xlsx").write_bytes(b"x")
    (inbox / "photos").mkdir()

    with caplog.at_level(logging.INFO, logger="pipeline"):
        counts = _run(cfg, ws)

    assert counts == {
        "files": 8,
        "applied": 2,
        "rejected": 0,
        "unsupported": 3,
        "left": 3,
        "rows_not_filled": 0,
    }
    done = sorted(p.name for p in (inbox / "done").iterdir())
    assert done == sorted(
        ["城关镇.xls", *(f"东村.{s}" for s in ("shp", "shx", "dbf", "prj", "cpg"))]
    )
    for name in ("核查说明.pdf", "通知.doc", "lonely.dbf"):
        assert (inbox / "rejected" / name).exists()
        reason = (inbox / "rejected" / f"{name}.rejected.csv").read_text(encoding="utf-8-sig")
        assert "unsupported file type" in reason and ".xls" in reason and ".shp" in reason
    left = sorted(p.name for p in inbox.iterdir() if p.name not in ("done", "rejected"))
    assert left == sorted([".DS_Store", "~$城关镇.xlsx", "photos"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for name in ("核查说明.pdf", "通知.doc", "lonely.dbf", ".DS_Store", "~$城关镇.xlsx", "photos"):
        assert any(name in w for w in warnings), name
    verdicts = load_registry(ws.registry, CRS).patches.set_index(P.PATCH_ID)[P.VERDICT]
    assert verdicts[ID1] == Verdict.ILLEGAL and verdicts[ID2] == Verdict.LEGAL


def test_inbox_counts_add_up_and_are_logged(workspace, caplog):
    """``files`` = applied + rejected + unsupported + left, and the inbox's log line says
    them: a WARNING when something was rejected or left, INFO when all was applied."""
    cfg, ws, inbox = workspace
    write_xls(["图斑号", "认定结果"], [[ID1, "违法"]], inbox / "a.xls")
    (inbox / "b.csv").write_text(f"图斑编号,核实认定\n{ID3},大概违法\n", encoding="utf-8")
    (inbox / "c.pdf").write_bytes(b"%PDF")
    (inbox / ".hidden").write_bytes(b"x")
    (inbox / "photos").mkdir()
    with caplog.at_level(logging.INFO, logger="pipeline"):
        counts = _run(cfg, ws)
    outcomes = ("applied", "rejected", "unsupported", "left")
    assert [counts[k] for k in outcomes] == [1, 1, 1, 2]
    assert counts["files"] == sum(counts[k] for k in outcomes) == 5
    line = describe_inbox(counts)
    assert line == "5 file(s): 1 applied, 1 rejected, 1 unsupported, 2 left in place"
    assert any(
        r.levelno == logging.WARNING and r.getMessage() == f"inbox: {line}" for r in caplog.records
    )
    caplog.clear()
    write_xls(["图斑号", "认定结果"], [[ID2, "合法"]], inbox / "d.xls")
    (inbox / ".hidden").unlink()
    (inbox / "photos").rmdir()
    with caplog.at_level(logging.INFO, logger="pipeline"):
        counts = _run(cfg, ws)
    assert counts["files"] == counts["applied"] == 1
    (record,) = [r for r in caplog.records if r.getMessage().startswith("inbox: 1 file(s)")]
    assert record.levelno == logging.INFO


def test_only_folders_left_count_as_files(workspace):
    """An inbox holding only a sub-folder: it is counted, as a file looked at and left."""
    cfg, ws, inbox = workspace
    (inbox / "photos").mkdir()
    counts = _run(cfg, ws)
    assert counts == {"files": 1, "left": 1}


def test_a_return_of_a_name_already_filed_does_not_overwrite_it(workspace):
    """A second return under a name already in done/ (or rejected/) is filed with the run id
    added to its name, sidecars and rejection report alike; the earlier file is kept."""
    cfg, ws, inbox = workspace
    write_xls(["图斑号", "认定结果"], [[ID1, "违法"]], inbox / "城关镇.xls")
    _shapefile_return(inbox, "东村", ID2)
    (inbox / "bad.csv").write_text(f"图斑编号,核实认定\n{ID3},大概违法\n", encoding="utf-8")
    import_inbox(cfg, ws, run_id="r1", now=NOW)
    first = {p.name: p.read_bytes() for p in (inbox / "done").iterdir()}

    write_xls(["图斑号", "认定结果"], [[ID1, "合法"]], inbox / "城关镇.xls")
    _shapefile_return(inbox, "东村", ID3)
    (inbox / "bad.csv").write_text(f"图斑编号,核实认定\n{ID3},也许\n", encoding="utf-8")
    counts = import_inbox(cfg, ws, run_id="r2", now=NOW)
    assert (counts["applied"], counts["rejected"]) == (2, 1)

    done = {p.name: p.read_bytes() for p in (inbox / "done").iterdir()}
    assert {k: done[k] for k in first} == first  # the earlier files, untouched
    assert set(done) - set(first) == {
        "城关镇.r2.xls",
        *(f"东村.r2.{s}" for s in ("shp", "shx", "dbf", "prj", "cpg")),
    }
    rejected = sorted(p.name for p in (inbox / "rejected").iterdir())
    assert rejected == [
        "bad.csv", "bad.csv.rejected.csv", "bad.r2.csv", "bad.r2.csv.rejected.csv"
    ]  # fmt: skip
    assert "也许" in (inbox / "rejected" / "bad.r2.csv.rejected.csv").read_text("utf-8-sig")
    assert "大概违法" in (inbox / "rejected" / "bad.csv.rejected.csv").read_text("utf-8-sig")
    assert gpd.read_file(inbox / "done" / "东村.r2.shp")["patch_id"].tolist() == [ID3]

    write_xls(["图斑号", "认定结果"], [[ID1, "合法"]], inbox / "城关镇.xls")
    import_inbox(cfg, ws, run_id="r2", now=NOW)  # the same run id again: a counter
    assert (inbox / "done" / "城关镇.r2-2.xls").exists()


def test_inbox_counts_rows_not_filled_and_rejects_bad_files(workspace):
    """A partly filled return is applied and its blank rows counted; a return with a bad
    value goes to rejected/ with the row and the reason."""
    cfg, ws, inbox = workspace
    write_xls(
        ["图斑编号", "核实认定", "备注"], [[ID1, "合法", None], [ID2, None, None]], inbox / "a.xls"
    )
    (inbox / "b.csv").write_text(f"图斑编号,核实认定\n{ID3},大概违法\n", encoding="utf-8")
    counts = _run(cfg, ws)
    assert (counts["applied"], counts["rejected"], counts["rows_not_filled"]) == (1, 1, 1)
    report = (inbox / "rejected" / "b.csv.rejected.csv").read_text(encoding="utf-8-sig")
    assert "b.csv,2," in report and "大概违法" in report
    verdicts = load_registry(ws.registry, CRS).patches.set_index(P.PATCH_ID)[P.VERDICT]
    assert verdicts.tolist() == [Verdict.LEGAL, Verdict.PENDING, Verdict.PENDING]


def test_inbox_files_lists_what_the_stage_must_handle(workspace):
    """The stage's inputs are every file waiting, unsupported ones included (so dropping a
    .pdf reruns the stage, which reports it), but not the sidecars of a .shp that is there."""
    _, _, inbox = workspace
    _shapefile_return(inbox, "r", ID1)
    (inbox / "orphan.dbf").write_bytes(b"\x03")
    (inbox / "memo.pdf").write_bytes(b"%PDF")
    (inbox / "done").mkdir()
    (inbox / "done" / "old.csv").write_text("x")
    assert [p.name for p in inbox_files(inbox)] == ["memo.pdf", "orphan.dbf", "r.shp"]


def test_missing_inbox_is_nothing_to_do(workspace):
    """No inbox folder yet (a fresh workspace): the stage has nothing to do."""
    cfg, ws, inbox = workspace
    inbox.rmdir()
    assert inbox_files(inbox) == [] and _run(cfg, ws) == {"files": 0}
