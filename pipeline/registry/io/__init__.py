"""File access of the registry: registry.gpkg and field-return files."""
