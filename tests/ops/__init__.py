"""Tests of ``pipeline.ops``."""
