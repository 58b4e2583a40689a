"""Tests of ``pipeline.detection``."""
