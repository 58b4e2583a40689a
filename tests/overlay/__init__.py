"""Tests of ``pipeline.overlay``."""
