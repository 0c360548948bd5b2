"""The built-in demonstration scenario (shipped: the plugin's "Load demo data" writes it).

Not part of the science in ``core/``: it writes synthetic inputs with a known 1 km truth.
"""
