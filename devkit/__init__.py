"""Scaffolding for the demo script, the benchmark and the tests; not shipped in the plugin zip.

- :mod:`.raw_inputs`: the scenario as raw inputs (reflectance, Sentinel-1 scenes, MCD12Q1, SMAP
  granules) for ``make demo-raw`` and the data-preparation tests.
- :mod:`.baseline`: the bilinear baseline and pooled scores against a truth raster.
"""
