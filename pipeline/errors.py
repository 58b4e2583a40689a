"""Exception hierarchy.

One root, :class:`LandwatchError`; each specific error also inherits the builtin it
specialises, so callers may catch either (``except ValueError`` still catches a bad
config value). Messages say what was found, what was expected and how to fix it.
"""

from __future__ import annotations


class LandwatchError(Exception):
    """Root of every error landwatch raises on purpose."""

    #: process exit code used by the CLI for this kind of error
    exit_code = 1


class ConfigError(LandwatchError, ValueError):
    """The configuration file is missing a key, has an unknown key or a bad value."""

    exit_code = 2


class InputDataError(LandwatchError, OSError):
    """An input file (raster, vector layer, field return) is missing, unreadable or wrong."""

    exit_code = 3


class GridError(InputDataError):
    """The administrative grid cannot be used (no polygons, codes unusable, ...)."""


class FieldReturnError(LandwatchError, ValueError):
    """A field return was rejected; nothing of it was applied.

    ``rejections`` holds one ``(file, row, reason)`` tuple per bad row.
    """

    exit_code = 4

    def __init__(self, message: str, rejections: list[tuple[str, int | None, str]] | None = None):
        super().__init__(message)
        self.rejections = list(rejections or [])


class RegistryError(LandwatchError, RuntimeError):
    """The registry is inconsistent with what an operation expects."""

    exit_code = 5


class WorkspaceLockedError(LandwatchError, RuntimeError):
    """Another landwatch run holds the workspace lock."""

    exit_code = 75  # EX_TEMPFAIL: cron may simply try again later


class StageError(LandwatchError, RuntimeError):
    """A pipeline stage failed; the message names the stage and the input."""

    exit_code = 6


class DossierError(LandwatchError, RuntimeError):
    """A patch dossier cannot be written (an unknown patch id, no font that draws Chinese)."""
