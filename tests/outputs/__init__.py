"""Tests of ``pipeline.outputs``."""
