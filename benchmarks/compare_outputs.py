"""Compare the outputs of two landwatch workspaces, with run ids, times and dates masked.

Used to prove that a change of code that should not change behaviour (a refactor) gives the
same registry patches, the same field-package contents and the same ``rates.csv``::

    python benchmarks/compare_outputs.py BEFORE_WORKSPACE AFTER_WORKSPACE

Run the same config on the same sample with the same ``--date`` before and after the change.
Compared:

- ``registry.gpkg``: layer ``patches`` (every column, geometries exactly) and the table
  ``events`` (kind, patch and values; times, sources and run ids masked);
- ``exports/*/*.zip``: the member names, and each member's bytes; a GeoPackage member by its
  rows instead (its file header holds a write time) and a workbook by its cell values;
- ``reports/*/rates.csv`` byte for byte.

Prints one line per difference and ends with ``identical=1`` or ``identical=0`` (exit code 0
or 1).
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import tempfile
import zipfile
from pathlib import Path

import openpyxl
import pandas as pd
import pyogrio

RUN_ID = re.compile(rb"\d{8}T\d{6}Z-[0-9a-f]{4}")
TIMESTAMP = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?")
MASKED_EVENT_COLUMNS = ("event_id", "time", "source", "run_id")


def mask(data: bytes) -> bytes:
    """``data`` with run ids and ISO-8601 times replaced by fixed tokens."""
    return TIMESTAMP.sub(b"<time>", RUN_ID.sub(b"<run>", data))


def compare_registry(before: Path, after: Path) -> list[str]:
    """Differences between the registries' patches and events."""
    diffs = []
    a = pyogrio.read_dataframe(before / "registry.gpkg", layer="patches")
    b = pyogrio.read_dataframe(after / "registry.gpkg", layer="patches")
    for frame in (a, b):
        if "updated_at" in frame:
            frame["updated_at"] = "<time>"
    diffs += _frame_diffs("registry patches", a, b, key="patch_id")
    ea = _events(before / "registry.gpkg")
    eb = _events(after / "registry.gpkg")
    diffs += _frame_diffs("registry events", ea, eb)
    return diffs


def _events(path: Path) -> pd.DataFrame:
    events = pyogrio.read_dataframe(path, layer="events", read_geometry=False)
    events = events.drop(columns=[c for c in MASKED_EVENT_COLUMNS if c in events])
    for col in events.columns:
        events[col] = events[col].map(lambda v: mask(str(v).encode()).decode())
    return events.sort_values(list(events.columns)).reset_index(drop=True)


def _frame_diffs(what: str, a: pd.DataFrame, b: pd.DataFrame, key: str | None = None) -> list[str]:
    if list(a.columns) != list(b.columns):
        return [f"{what}: columns differ: {list(a.columns)} vs {list(b.columns)}"]
    if key is not None:
        a = a.sort_values(key).reset_index(drop=True)
        b = b.sort_values(key).reset_index(drop=True)
    if len(a) != len(b):
        return [f"{what}: {len(a)} rows before, {len(b)} after"]
    diffs = []
    for col in a.columns:
        left, right = a[col], b[col]
        if col == "geometry":
            same = left.geom_equals_exact(right, tolerance=0).all()
        else:
            same = left.astype(str).equals(right.astype(str))
        if not same:
            diffs.append(f"{what}: column {col!r} differs")
    return diffs


def compare_packages(before: Path, after: Path) -> list[str]:
    """Differences between the field packages of the two workspaces."""
    zips_a = {p.relative_to(before).as_posix(): p for p in sorted(before.glob("exports/*/*.zip"))}
    zips_b = {p.relative_to(after).as_posix(): p for p in sorted(after.glob("exports/*/*.zip"))}
    if set(zips_a) != set(zips_b):
        return [f"packages differ: {sorted(set(zips_a) ^ set(zips_b))}"]
    diffs = []
    for name, path in zips_a.items():
        with zipfile.ZipFile(path) as za, zipfile.ZipFile(zips_b[name]) as zb:
            if za.namelist() != zb.namelist():
                diffs.append(f"{name}: members differ")
                continue
            for member in za.namelist():
                if not _same_member(member, za.read(member), zb.read(member)):
                    diffs.append(f"{name}: {member} differs")
    return diffs


def _same_member(member: str, a: bytes, b: bytes) -> bool:
    if mask(a) == mask(b):
        return True
    if member.endswith(".gpkg"):
        return not _frame_diffs(member, *(_gpkg_frame(x) for x in (a, b)))
    if member.endswith(".xlsx"):
        return _cells(a) == _cells(b)
    return False


def _gpkg_frame(data: bytes) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "layer.gpkg"
        path.write_bytes(data)
        return pyogrio.read_dataframe(path)


def _cells(data: bytes) -> list[list[tuple]]:
    book = openpyxl.load_workbook(io.BytesIO(data))
    return [[tuple(row) for row in sheet.iter_rows(values_only=True)] for sheet in book]


def compare_rates(before: Path, after: Path) -> list[str]:
    """Differences between the ``rates.csv`` files of every report date."""
    files_a = {p.relative_to(before).as_posix(): p for p in before.glob("reports/*/rates.csv")}
    files_b = {p.relative_to(after).as_posix(): p for p in after.glob("reports/*/rates.csv")}
    if set(files_a) != set(files_b):
        return [f"reports differ: {sorted(set(files_a) ^ set(files_b))}"]
    return [f"{n} differs" for n, p in files_a.items() if p.read_bytes() != files_b[n].read_bytes()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="workspace made before the change")
    parser.add_argument("after", type=Path, help="workspace made after the change")
    args = parser.parse_args(argv)
    diffs = (
        compare_registry(args.before, args.after)
        + compare_packages(args.before, args.after)
        + compare_rates(args.before, args.after)
    )
    for line in diffs:
        print(line)
    n_packages = len(list(args.before.glob("exports/*/*.zip")))
    print(f"packages={n_packages} differences={len(diffs)} identical={int(not diffs)}")
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(main())
