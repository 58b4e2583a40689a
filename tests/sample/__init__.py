"""Tests of ``pipeline.sample``."""
