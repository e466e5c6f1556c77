"""Whole-raster mapping: window geometry, embedding input, blended block prediction, COG output, resume."""
