"""Map products made from a finished class map: area statistics, quicklook PNGs, polygons."""
