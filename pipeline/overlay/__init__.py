"""Overlay of patches with farmland, approvals and the administrative grid."""
