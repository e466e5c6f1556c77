"""Acquiring AlphaEarth Foundations embeddings: Earth Engine exports and windowed reads of the public COGs."""
