"""Dossiers in a real run: one per patch in the workspace and in its township's package, linked
from the package's patch list and the report's map; ``landwatch dossier`` redraws only what
changed and refuses unknown ids without writing anything."""

from __future__ import annotations

import json
import shutil
import zipfile

import pyogrio
import pypdfium2 as pdfium
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.ops.dossiers import MANIFEST
from pipeline.schema import PATCHES_LAYER, P
from tests.samples import RUN_DATE, write_sample_config


def _ids(workspace) -> list[str]:
    patches = pyogrio.read_dataframe(workspace / "registry.gpkg", layer=PATCHES_LAYER)
    return sorted(patches[P.PATCH_ID])


def test_every_patch_has_a_dossier_in_the_workspace_and_in_its_package(sample_run):
    workspace = sample_run.folder / "out"
    ids = _ids(workspace)
    assert ids
    folder = workspace / "dossiers"
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    assert sorted(manifest) == ids
    for pid in ids:
        assert (folder / f"{pid}.pdf").stat().st_size > 10_000
        assert (folder / f"{pid}.html").stat().st_size > 10_000
    in_packages = set()
    for package in (workspace / "exports" / RUN_DATE).glob("*.zip"):
        with zipfile.ZipFile(package) as zf:
            names = zf.namelist()
            listing = next(n for n in names if n.endswith("/patches.html"))
            page = zf.read(listing).decode("utf-8")
        for name in names:
            if "/dossiers/" in name and name.endswith(".pdf"):
                pid = name.rsplit("/", 1)[1].removesuffix(".pdf")
                in_packages.add(pid)
                assert f'href="dossiers/{pid}.html"' in page
    assert in_packages == set(ids)


def test_the_map_links_the_dossiers(sample_run):
    workspace = sample_run.folder / "out"
    page = (workspace / "reports" / RUN_DATE / "map.html").read_text(encoding="utf-8")
    pid = _ids(workspace)[0]
    assert f"../../dossiers/{pid}" in page


def test_the_pdf_names_the_patch_and_its_village(sample_run):
    workspace = sample_run.folder / "out"
    patches = pyogrio.read_dataframe(workspace / "registry.gpkg", layer=PATCHES_LAYER)
    row = patches.iloc[0]
    pdf = pdfium.PdfDocument(workspace / "dossiers" / f"{row[P.PATCH_ID]}.pdf")
    text = "".join(pdf[0].get_textpage().get_text_range().split())
    assert f"图斑档案{row[P.PATCH_ID]}" in text
    assert str(row[P.VILLAGE_NAME]) in text


def test_the_command_redraws_only_what_is_missing_and_refuses_unknown_ids(sample_run, tmp_path):
    folder = tmp_path / "area"
    shutil.copytree(sample_run.folder, folder)
    config = write_sample_config(folder, folder / "out", dossiers=True)
    dossiers = folder / "out" / "dossiers"
    first, second = _ids(folder / "out")[:2]
    kept = (dossiers / f"{first}.pdf").stat().st_mtime_ns
    (dossiers / f"{second}.html").unlink()

    result = CliRunner().invoke(cli, ["dossier", "--config", str(config), first, second])
    assert result.exit_code == 0, result.output
    assert (dossiers / f"{first}.pdf").stat().st_mtime_ns == kept  # unchanged: not redrawn
    assert (dossiers / f"{second}.html").is_file()  # missing: drawn again

    before = sorted(p.name for p in dossiers.iterdir())
    result = CliRunner().invoke(cli, ["dossier", "--config", str(config), first, "130609209900001"])
    assert result.exit_code != 0
    assert "130609209900001" in result.output and "registry" in result.output
    assert sorted(p.name for p in dossiers.iterdir()) == before

    result = CliRunner().invoke(cli, ["dossier", "--config", str(config)])
    assert result.exit_code == 2 and "--all" in result.output
