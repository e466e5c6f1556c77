"""The bottom raster layer: pixel geometry, north-up geotransforms, the one embedding reader, class legends and
the tags every map product carries. It imports nothing from the layers above (data, synth, acquire, mapping,
products), which all build on it."""
