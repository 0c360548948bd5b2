"""In-situ station observations in long format (site id, date, value, coordinates)."""
from collections import namedtuple

#: One in-situ reading: ``site_id`` (str), ``date`` (ISO ``YYYY-MM-DD``), ``value`` (m3/m3),
#: ``x``, ``y`` (station coordinates in the CRS passed to ``core.validate.validate``).
Observation = namedtuple("Observation", ["site_id", "date", "value", "x", "y"])
