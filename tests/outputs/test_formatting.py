"""Formatting shared by the field packages and the report (pipeline.outputs.formatting)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import ConfigError
from pipeline.outputs.formatting import fmt_float, isna, label, output_date, text
from pipeline.schema import Verdict


def test_output_date_is_a_config_error_when_missing_or_malformed():
    """Packages and reports need their date: missing or malformed is a ConfigError."""
    assert output_date("2024-05-01") == dt.date(2024, 5, 1)
    for bad in (None, "", "May 1st", "2024-02-30"):
        with pytest.raises(ConfigError, match="expected YYYY-MM-DD"):
            output_date(bad)


@pytest.mark.parametrize("missing", [None, pd.NA, np.nan, pd.NaT, float("nan")])
def test_missing_values_show_as_empty_text(missing):
    """Every kind of missing value is missing, and shows as empty text, label and number."""
    assert isna(missing)
    assert text(missing) == label(missing) == fmt_float(missing, 2) == ""


def test_values_show_as_text_labels_and_numbers():
    """Status values get their Chinese label; other values are shown as they are."""
    assert label(Verdict.ILLEGAL) == "违法" and label("no status") == "no status"
    assert text(0) == "0" and not isna([1, 2])  # a list is a value, not missing
    assert fmt_float(1 / 3, 4) == "0.3333" and fmt_float(float("inf"), 2) == ""
