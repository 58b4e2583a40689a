"""File access of the overlay: vector layers, their text encodings and checks."""
