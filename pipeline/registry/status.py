"""The status of a patch as maps and lists show it: ``rectified`` for an illegal patch with
nothing remaining, else its verdict; with one legend label and one colour per status (the
QGIS style, the interactive map and the dossiers share them)."""

from __future__ import annotations

import pandas as pd

from pipeline.schema import CHINESE_LABELS, P, Verdict

RECTIFIED = "rectified"
"""Status of an illegal patch with nothing remaining (not a verdict: a state of one)."""

STATUS_COLOURS: dict[str, tuple[str, str]] = {
    Verdict.PENDING.value: ("待核查 pending", "255,193,7"),
    Verdict.ILLEGAL.value: (f"{CHINESE_LABELS[Verdict.ILLEGAL]} illegal", "229,57,53"),
    RECTIFIED: ("已整改 rectified", "67,160,71"),
    Verdict.LEGAL.value: (f"{CHINESE_LABELS[Verdict.LEGAL]} legal", "30,136,229"),
    Verdict.FALSE_CHANGE.value: (
        f"{CHINESE_LABELS[Verdict.FALSE_CHANGE]} false change",
        "158,158,158",
    ),
    Verdict.OTHER.value: (f"{CHINESE_LABELS[Verdict.OTHER]} other", "142,36,170"),
}
"""Status -> (legend label, fill colour as R,G,B)."""

UNKNOWN_COLOUR = "120,120,120"
"""Fill of a status not in :data:`STATUS_COLOURS` (a value written by hand)."""


def patch_status(patches: pd.DataFrame) -> pd.Series:
    """``rectified`` for an illegal patch with nothing remaining, else its verdict."""
    rectified = (patches[P.VERDICT] == Verdict.ILLEGAL) & (patches[P.REMAINING_M2] == 0)
    return patches[P.VERDICT].where(~rectified, RECTIFIED).fillna(Verdict.PENDING.value)


def status_style(status: str) -> tuple[str, str]:
    """(legend label, ``r,g,b``) of a status (the value itself in grey when unknown)."""
    return STATUS_COLOURS.get(status, (str(status), UNKNOWN_COLOUR))
