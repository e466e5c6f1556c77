"""Map accuracy assessment: stratified sampling of reference points, and accuracy and error-adjusted area with 95 % intervals.

``estimator`` holds the statistics (pure functions), ``sampling`` draws points from a class map or a zone set,
``assess`` reads labelled points (or a truth raster) and writes the report.
"""
