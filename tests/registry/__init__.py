"""Tests of ``pipeline.registry``."""
