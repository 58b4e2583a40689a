"""File access of the detect stage: imagery reading and COG writing."""
