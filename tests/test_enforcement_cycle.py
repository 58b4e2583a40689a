"""The demo's whole enforcement cycle on a generated sample, through the CLI: detection as of a
past day, two rounds of simulated field returns (round 1 zipped with field photos, round 2
bare CSVs), and the report that shows the cycle."""

from __future__ import annotations

import datetime as dt
import json
import zipfile

import openpyxl
import pytest
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.config import load_config
from pipeline.registry.io.registry_file import load_registry
from pipeline.sample.returns import PATHS, enforcement_path
from pipeline.schema import E, EventKind, P, Verdict
from tests.samples import write_sample_config


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def cycle_run(sample_area, tmp_path_factory):
    """The demo's timeline on a private copy of the end-to-end sample."""
    folder = sample_area(copy_to=tmp_path_factory.mktemp("cycle"))
    config = write_sample_config(folder, folder / "out")
    truth = folder / "truth.gpkg"
    invoke("run", "--config", config, "--as-of", "2017-06-01")
    invoke("sample", "returns", "--config", config, "--truth", truth, "--round", 1,
           "--date", "2017-06-20")  # fmt: skip
    invoke("run", "--config", config, "--as-of", "2017-06-30")
    invoke("sample", "returns", "--config", config, "--truth", truth, "--round", 2,
           "--date", "2017-08-25", "--no-photos")  # fmt: skip
    invoke("run", "--config", config, "--as-of", "2017-09-01")
    return config


def test_every_simulated_return_is_applied_and_every_step_is_an_event(cycle_run):
    cfg = load_config(cycle_run)
    inbox = cfg.field_returns.inbox
    assert not (inbox / "rejected").exists() or not list((inbox / "rejected").iterdir())
    assert len(list((inbox / "done").glob("*_第1轮核查.zip"))) >= 2
    assert len(list((inbox / "done").glob("*_第2轮核查.csv"))) >= 2
    state = load_registry(cfg.workspace / "registry.gpkg", cfg.area.crs)
    illegal = state.patches[state.patches[P.VERDICT] == Verdict.ILLEGAL]
    assert len(illegal) > 0 and state.patches[P.VERDICT].ne(Verdict.PENDING).all()
    steps = state.events[state.events[E.KIND] == EventKind.ENFORCEMENT]
    assert len(steps) == 2 * len(illegal)  # round 1 and round 2: one step each
    dates = {json.loads(v)[P.STAGE_DATE] for v in steps[E.VALUES]}
    assert "2017-06-20" in dates and all(
        "2017-07-11" <= d <= "2017-08-25" for d in dates - {"2017-06-20"}
    )
    detected = state.events[state.events[E.KIND] == EventKind.DETECTED]
    assert set(detected[E.TIME].str[:10]) == {"2017-06-01"}  # recorded as of the past day


def test_the_photos_of_round_1_are_all_linked_by_name_or_by_gps(cycle_run):
    cfg = load_config(cycle_run)
    sent = []  # phone names may repeat across townships: a list, not a set
    for path in (cfg.field_returns.inbox / "done").glob("*_第1轮核查.zip"):
        with zipfile.ZipFile(path) as archive:
            sent += [n for n in archive.namelist() if n.endswith(".jpg")]
    state = load_registry(cfg.workspace / "registry.gpkg", cfg.area.crs)
    photos = state.events[state.events[E.KIND] == EventKind.PHOTO]
    values = [json.loads(v) for v in photos[E.VALUES]]
    assert sent and sorted(v["name"] for v in values) == sorted(sent)
    assert {v["matched_by"] for v in values} == {"name", "gps"}
    assert all(v["distance_m"] == 0.0 and v["taken_at"][:10] == "2017-06-20" for v in values)
    assert len(list((cfg.workspace / "photos").rglob("*.jpg"))) == len(sent)


def test_the_report_shows_the_cycle(cycle_run):
    cfg = load_config(cycle_run)
    report = cfg.workspace / "reports" / "2017-09-01"
    html = (report / "report.html").read_text(encoding="utf-8")
    for anchor in ('id="funnel-image"', 'id="burnup-image"', 'id="months-image"',
                   'id="assessment"', 'id="stock"', "按期 on track"):  # fmt: skip
        assert anchor in html, anchor
    assert "挽回土地价值" in html  # the demo config sets a land price
    book = openpyxl.load_workbook(report / "assessment.xlsx")
    assert book.sheetnames == ["township 2017", "village 2017"]
    headers = [c.value for c in book["village 2017"][1]]
    assert "奖励(元)" in headers and "扣减补贴(元)" in headers


def test_paths_are_spread_like_the_practice():
    """Most cases end in self-demolition after guidance; the path of a patch never changes."""
    ids = [f"1306092017{i:05d}" for i in range(1, 2001)]
    firsts = [enforcement_path(pid) for pid in ids]
    share = sum(p == PATHS[0][1:] for p in firsts) / len(ids)
    assert 0.55 < share < 0.65
    assert firsts == [enforcement_path(pid) for pid in ids]


def test_monthly_epoch_labels_work_end_to_end(sample_area, tmp_path):
    """Epochs labelled by month: ids keep {county6}{year4}{serial5}, a stage dated before the
    epoch's month is rejected, and the report counts the new cases in that month."""
    import yaml

    from pipeline.errors import FieldReturnError
    from pipeline.ops.field_import import import_returns

    folder = sample_area(copy_to=tmp_path / "area")
    config = write_sample_config(folder, folder / "out")
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["imagery"]["epochs"] = {
        "2016-10": ["imagery/2016/*.tif"],
        "2017-05": ["imagery/2017/*.tif"],
    }
    config.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    invoke("run", "--config", config, "--as-of", "2017-06-01")
    cfg = load_config(config)
    state = load_registry(cfg.workspace / "registry.gpkg", cfg.area.crs)
    assert set(state.patches[P.EPOCH_TO]) == {"2017-05"}
    assert state.patches[P.PATCH_ID].str.fullmatch(r"1306092017\d{5}").all()
    pid = state.patches[P.PATCH_ID].iloc[0]
    early = tmp_path / "early.csv"
    early.write_text(f"图斑编号,核实认定意见,查处阶段,阶段日期\n{pid},违法,告知,2017-04-30\n",
                     encoding="utf-8")  # fmt: skip
    with pytest.raises(FieldReturnError, match="1 bad row"):
        import_returns(cfg, [early], today=dt.date(2017, 6, 1))
    reasons = (cfg.workspace / "rejections" / "early.rejected.csv").read_text(encoding="utf-8-sig")
    assert "before the patch's epoch 2017-05 (from 2017-05-01)" in reasons
    invoke("sample", "returns", "--config", config, "--truth", folder / "truth.gpkg",
           "--round", 1, "--date", "2017-06-20")  # fmt: skip
    invoke("run", "--config", config, "--as-of", "2017-06-30")
    html = (cfg.workspace / "reports" / "2017-06-30" / "report.html").read_text(encoding="utf-8")
    assert "<tr><td>2017-05</td>" in html and "2017Q2" in html
