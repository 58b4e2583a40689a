"""The reads and writes of the learning stage: raster features, the stored model."""
