"""Text encodings of the input layers (pipeline.overlay.io.dbf, pipeline.overlay.io.vectors).

Rules, first match wins: the layer's ``encoding`` key, the ``.cpg``, the DBF language byte,
strict UTF-8, GB18030; nothing else, whatever GDAL's ``SHAPE_ENCODING`` says. Every test
writes a real Shapefile whose text bytes are known, then reads it back.
"""

from __future__ import annotations

import logging

import geopandas as gpd
import pyogrio
import pytest

from pipeline.errors import InputDataError
from pipeline.overlay.io.dbf import (
    encoding_of_cpg,
    encoding_of_language_driver,
    first_mismatch,
    first_undecodable,
    language_driver_of,
    parse_header,
)
from pipeline.overlay.io.vectors import inspect_layer, layer_fingerprint, read_columns, read_layer
from tests.shapefiles import CRS, box, townships_frame, write_shapefile

NAMES = ["青宁街道", "河西乡"]


def names_frame(names=NAMES, column: str = "XZMC") -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({column: names}, geometry=[box(0, 0, 10, 10)] * len(names), crs=CRS)


# --------------------------------------------------------------------------- the rules
def test_gbk_without_cpg_and_language_byte_0_reads_as_chinese(tmp_path, caplog):
    """The bureau case: GBK bytes, no .cpg, language byte 0. GDAL alone gives Latin-1
    mojibake; the layer reads as the same Chinese, and the log says which encoding and why."""
    path = write_shapefile(tmp_path / "XZ.shp", townships_frame())
    assert "ÇàÄþ½ÖµÀ" in set(pyogrio.read_dataframe(path)["XZMC"])  # what GDAL alone does
    with caplog.at_level(logging.INFO, logger="pipeline.overlay.io.vectors"):
        gdf = read_layer(path, key="layers.township")
    assert list(gdf["XZMC"]) == NAMES
    line = next(r.getMessage() for r in caplog.records if "text encoding" in r.getMessage())
    assert line.startswith("layers.township (")
    assert "XZ.shp" in line and "GB18030" in line and "detected" in line


@pytest.mark.parametrize("setting", ["UTF-8", "GBK", "ISO-8859-1"])
def test_shape_encoding_in_the_environment_plays_no_part(tmp_path, monkeypatch, setting):
    """GDAL's SHAPE_ENCODING (set in the environment for some other tool) does not change
    what a layer reads as: GBK without .cpg, and UTF-8 with its .cpg, both come out right."""
    gbk = write_shapefile(tmp_path / "gbk.shp", names_frame())
    utf8 = write_shapefile(tmp_path / "utf8.shp", names_frame(), encoding="UTF-8", cpg="UTF-8")
    monkeypatch.setenv("SHAPE_ENCODING", setting)
    assert list(read_layer(gbk)["XZMC"]) == NAMES
    assert list(read_layer(utf8)["XZMC"]) == NAMES


@pytest.mark.parametrize(
    ("encoding", "cpg", "ldid", "expected", "reason"),
    [
        ("UTF-8", "UTF-8", 0x4D, "UTF-8", ".cpg"),  # the .cpg wins over the language byte
        ("GBK", "936", 0, "GBK", ".cpg"),  # a code-page number, as ArcGIS writes it
        ("GBK", None, 0x4D, "GBK", "language byte (0x4D)"),
        ("GBK", None, 0x7A, "GBK", "language byte (0x7A)"),
        ("GBK", None, 0x57, "GB18030", "detected"),  # 0x57 "ANSI": says nothing
        ("UTF-8", None, 0, "UTF-8", "detected"),
        ("GBK", "", 0, "GB18030", "detected"),  # an empty .cpg says nothing
    ],
)
def test_cpg_then_language_byte_then_detection(tmp_path, encoding, cpg, ldid, expected, reason):
    """Each rule decides in its turn; the text always reads as the Chinese written."""
    path = write_shapefile(tmp_path / "x.shp", names_frame(), encoding=encoding, cpg=cpg, ldid=ldid)
    info = inspect_layer(path)
    assert info.encoding.encoding == expected
    assert reason in info.encoding.reason
    assert list(read_layer(path)["XZMC"]) == NAMES


def test_encoding_key_overrides_a_wrong_cpg(tmp_path):
    """A .cpg that lies (says UTF-8 over GBK bytes) is an error naming the record and asking
    for the key; with ``encoding: GBK`` the layer reads right."""
    path = write_shapefile(tmp_path / "x.shp", names_frame(), cpg="UTF-8")
    with pytest.raises(InputDataError) as err:
        read_layer(path, key="layers.village")
    message = str(err.value)
    assert "not valid UTF-8 as the .cpg file ('UTF-8') says" in message
    assert "record 1, field 'XZMC'" in message and "'layers.village.encoding'" in message
    assert list(read_layer(path, encoding="GBK", key="layers.village")["XZMC"]) == NAMES


def test_text_in_neither_utf8_nor_gb18030_asks_for_the_encoding_key(tmp_path):
    """CP1252 text (€ is byte 0x80, invalid in UTF-8 and in GB18030) with nothing declared:
    an input error naming the layer and ``layers.<name>.encoding``; declared, it reads."""
    path = write_shapefile(tmp_path / "fr.shp", names_frame(["€uro", "été"]), encoding="CP1252")
    with pytest.raises(InputDataError) as err:
        read_layer(path, key="layers.approvals")
    message = str(err.value)
    assert "layers.approvals (" in message and "fr.shp" in message
    assert "neither as UTF-8 nor as GB18030" in message
    assert "set 'layers.approvals.encoding'" in message
    assert isinstance(err.value, OSError)
    got = read_layer(path, encoding="CP1252", key="layers.approvals")["XZMC"]
    assert list(got) == ["€uro", "été"]


def test_latin_text_that_happens_to_decode_as_gb18030_is_not_taken_for_chinese(tmp_path):
    """CP1252 text without a .cpg whose bytes are valid GB18030 ('Montréal' reads as
    'Montr閍l': rare ideographs of GBK's extension area) is an input error naming the layer,
    showing a value and asking for ``layers.<name>.encoding``; declared, it reads."""
    names = ["Montréal Saône", "Málaga Córdoba"]
    path = write_shapefile(tmp_path / "fr.shp", names_frame(names), encoding="CP1252")
    assert "Montréal Saône".encode("cp1252").decode("gb18030") == "Montr閍l Sa鬾e"
    with pytest.raises(InputDataError) as err:
        read_layer(path, key="layers.approvals")
    message = str(err.value)
    assert "layers.approvals (" in message and "fr.shp" in message
    assert "'Montr閍l Sa鬾e' as GB18030" in message and "'Montréal Saône' as CP1252" in message
    assert "set 'layers.approvals.encoding'" in message
    got = read_layer(path, encoding="CP1252", key="layers.approvals")["XZMC"]
    assert list(got) == names


def test_chinese_with_punctuation_and_a_rare_character_is_still_chinese(tmp_path):
    """Detected GB18030 text of common hanzi, CJK and full-width punctuation reads, even
    with a character outside GB2312 (堃) among them."""
    names = ["冀政转征〔2017〕12号", "青宁街道（东区）", "王堃家庭农场", *NAMES]
    path = write_shapefile(tmp_path / "pz.shp", names_frame(names))
    assert list(read_layer(path)["XZMC"]) == names


def test_chinese_field_names_are_decoded_too(tmp_path):
    """Field names in GBK (名称) come out as Chinese and can be asked for by name."""
    path = write_shapefile(tmp_path / "x.shp", names_frame(column="名称"))
    assert inspect_layer(path).fields == ("名称",)
    assert list(read_columns(path, ["名称"])["名称"]) == NAMES


def test_a_character_cut_by_a_narrow_field_is_dropped_with_a_warning(tmp_path, caplog):
    """GBK text cut in the middle of a character (field too narrow) is not a decoding error:
    the cut character is left out and the log says how many values were cut."""
    path = write_shapefile(tmp_path / "x.shp", names_frame())
    dbf = path.with_suffix(".dbf")
    data = dbf.read_bytes()
    full = "青宁街道".encode("gbk")
    dbf.write_bytes(data.replace(full, full[:-1] + b" "))
    with caplog.at_level(logging.WARNING, logger="pipeline.overlay.io.vectors"):
        gdf = read_layer(path)
    assert list(gdf["XZMC"]) == ["青宁街", "河西乡"]
    assert "1 text value(s) end in a character cut in half" in caplog.text


def test_utf8_with_a_cut_character_is_not_taken_for_gb18030(tmp_path):
    """UTF-8 text with one value cut mid-character would decode as GB18030 mojibake; it is an
    error that says the text is UTF-8 and names the value instead."""
    path = write_shapefile(tmp_path / "x.shp", names_frame(), encoding="UTF-8")
    dbf = path.with_suffix(".dbf")
    full = "青宁街道".encode()
    dbf.write_bytes(dbf.read_bytes().replace(full, full[:-1] + b" "))
    with pytest.raises(InputDataError, match="the text is UTF-8, but some values end in a"):
        read_layer(path)


def test_geopackage_text_passes_through(tmp_path, caplog):
    """Formats that define their encoding (GeoPackage: UTF-8) are read as they are."""
    path = tmp_path / "x.gpkg"
    names_frame().to_file(path, driver="GPKG")
    with caplog.at_level(logging.INFO, logger="pipeline.overlay.io.vectors"):
        assert list(read_layer(path, key="layers.township")["XZMC"]) == NAMES
    assert "text encoding as the .gpkg format defines it" in caplog.text


def test_fingerprint_sees_a_corrected_attribute_table(tmp_path):
    """A Shapefile's fingerprint covers its .dbf and .cpg: correcting a name reruns the
    stages that read the layer, though the .shp is unchanged."""
    path = write_shapefile(tmp_path / "x.shp", names_frame())
    before = layer_fingerprint(path)
    write_shapefile(path, names_frame(["青宁街道", "河东乡"]))
    assert layer_fingerprint(path) != before
    path.with_suffix(".cpg").write_text("GBK", encoding="ascii")
    assert layer_fingerprint(path) != before


# --------------------------------------------------------------------------- pure parts
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("UTF-8", "UTF-8"),
        ("utf8\r\n", "UTF-8"),
        ("65001", "UTF-8"),
        ("936", "GBK"),
        ("ANSI 936", "GBK"),
        ("CP936", "GBK"),
        ("GBK", "GBK"),
        ("GB2312", "GB2312"),
        ("GB18030", "GB18030"),
        ("88591", "ISO-8859-1"),
        ("8859_5", "ISO-8859-5"),
        ("1252", "CP1252"),
        ("", None),
        ("no such thing", None),
    ],
)
def test_cpg_contents(text, expected):
    """The .cpg forms GDAL accepts map to one encoding name GDAL and Python both know."""
    assert encoding_of_cpg(text) == expected


def test_language_bytes():
    """0x4D and 0x7A are GBK (code page 936), 0x4F Big5; 0 and 0x57 (ANSI) say nothing."""
    assert encoding_of_language_driver(0x4D) == encoding_of_language_driver(0x7A) == "GBK"
    assert encoding_of_language_driver(0x4F) == "BIG5"
    assert encoding_of_language_driver(0x03) == "CP1252"
    assert encoding_of_language_driver(0) is None
    assert encoding_of_language_driver(0x57) is None


def test_language_byte_written_for_an_encoding_is_read_back_as_it():
    """The packages' byte for ``export.encoding`` comes from the same table the readers use:
    GBK (or cp936) is 0x4D, read back as GBK; UTF-8 has no byte (0: its .cpg says)."""
    assert language_driver_of("GBK") == language_driver_of("cp936") == 0x4D
    assert language_driver_of("UTF-8") == 0
    for name in ("GBK", "BIG5", "CP1252", "CP866"):
        assert encoding_of_language_driver(language_driver_of(name)) == name


def test_header_and_first_undecodable_value(tmp_path):
    """The DBF reader finds the fields and the first value that is not valid in an encoding
    (1-based record number), skipping none of the live records."""
    path = write_shapefile(tmp_path / "x.shp", names_frame(["abc", "河西乡"]))
    data = path.with_suffix(".dbf").read_bytes()
    header = parse_header(data)
    assert header.n_records == 2 and [f.name for f in header.fields] == [b"XZMC"]
    bad, n_cut = first_undecodable(data, header, "UTF-8")
    assert (bad.record, bad.field, bad.raw, n_cut) == (2, "XZMC", "河西乡".encode("gbk"), 0)
    assert first_undecodable(data, header, "GB18030") == (None, 0)
    with pytest.raises(ValueError, match="DBF header"):
        parse_header(b"\x03" * 10)


def test_first_mismatch_catches_text_in_another_encoding(tmp_path):
    """The check run on every exported .dbf: UTF-8 bytes checked as GBK decode to other
    characters (涓滄潙 for 东村) and are reported with the record and the field; a value cut
    to its field's width is not a mismatch."""
    path = write_shapefile(tmp_path / "x.shp", names_frame(), encoding="UTF-8")
    data = path.with_suffix(".dbf").read_bytes()
    assert first_mismatch(data, "UTF-8", {"XZMC": NAMES}) is None
    assert first_mismatch(data, "UTF-8", {"XZMC": ["青宁街道", None]}) is None
    assert first_mismatch(data, "UTF-8", {"XZMC": ["青宁街道（东）", "河西乡"]}) is None
    wrong = first_mismatch(data, "GBK", {"XZMC": NAMES})
    assert wrong.startswith("record 1, field 'XZMC': '闈掑畞琛楅亾' instead of '青宁街道'")
    assert first_mismatch(data, "UTF-8", {"NAME": NAMES}) == "field 'NAME' is missing"
