"""Tiling, expression targets, folds and window storage."""
