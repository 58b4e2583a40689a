"""Change-score methods fitted per scene in pass 1."""
