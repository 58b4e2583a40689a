"""Learning from field verdicts: patch features kept at detect time, a classifier trained on
the verified patches, and the ranking of pending patches it gives."""
