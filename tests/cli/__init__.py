"""Tests of ``pipeline.cli``."""
