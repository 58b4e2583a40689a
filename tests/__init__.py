"""Tests of landwatch: one folder per subpackage of ``pipeline``, helper builders beside them."""
