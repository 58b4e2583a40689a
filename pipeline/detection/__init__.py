"""The detect stage: imagery on the target grid, change scores, clean-up, patches."""
