"""Where a map can be trusted: calibrated confidence and the area of applicability."""
