"""The downscaling library. Imports nothing from qgis, processing or ui."""
