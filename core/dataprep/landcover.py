"""MCD12Q1 LC_Type5 (plant functional types) -> the paper's Table 2 classes.

Table 2: 0 water -> 0; 1-5 (evergreen/deciduous needleleaf/broadleaf forest, shrub) -> 1 forest;
6 grass -> 2 grassland; 7-8 (cereal, broadleaf croplands) -> 3 cropland; 9-11 (urban and
built-up, permanent snow and ice, non-vegetated) -> 4 urban and other. 255 (unclassified) and
any value not in the table become nodata.

The output keeps the input grid and is float32 with NaN nodata (the categorical convention of
core.preprocess: classes are whole numbers stored as float).
"""
import os

import numpy as np

from ..common import Progress, SmdError
from ..grids import block_windows
from ..outputs import check_outputs
from .series_io import grid_profile, open_raster, open_series_writer, read_masked

#: The paper's Table 2 as reclassification text.
TABLE2 = "0:0,1-5:1,6:2,7-8:3,9-11:4"


def parse_reclass_table(text):
    """Parse ``"0:0,1-5:1,6:2,7-8:3,9-11:4"`` into a list of (low, high, new_class).

    Sources are whole numbers or ranges ``a-b`` (inclusive); the target is a whole number or
    ``nodata``. Values not covered by any entry become nodata. Overlapping sources are an error.
    """
    if text is None or not str(text).strip():
        raise SmdError(f"The reclassification table is empty; give entries like {TABLE2!r}.")
    entries = []
    for item in str(text).replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        source, sep, target = item.partition(":")
        low, dash, high = source.strip().partition("-")
        try:
            low = int(low)
            high = int(high) if dash else low
            target = target.strip()
            new = None if target.lower() in ("nodata", "nan", "null") else int(target)
        except ValueError as err:
            raise SmdError(f"Reclassification entry {item!r} is not 'value:class' or 'low-high:class' "
                           f"with whole numbers (e.g. {TABLE2!r}).") from err
        if not sep:
            raise SmdError(f"Reclassification entry {item!r} lacks ':class' (e.g. '1-5:1').")
        if high < low:
            raise SmdError(f"Reclassification entry {item!r}: the range runs backwards.")
        for other_low, other_high, _ in entries:
            if low <= other_high and other_low <= high:
                raise SmdError(f"Reclassification entry {item!r} overlaps {other_low}-{other_high}; "
                               "each original value may appear once.")
        entries.append((low, high, new))
    if not entries:
        raise SmdError(f"The reclassification table has no entries; give entries like {TABLE2!r}.")
    return entries


def reclassify_array(values, entries, *, nodata_classes=()):
    """Apply parsed entries to an array; float32 result, NaN for nodata/unmapped/non-integer values."""
    values = np.asarray(values, dtype="float64")
    result = np.full(values.shape, np.nan, dtype="float32")
    whole = np.isfinite(values) & (values == np.floor(values))
    for low, high, new in entries:
        if new is None or new in nodata_classes:
            continue
        result[whole & (values >= low) & (values <= high)] = new
    return result


def reclassify_landcover(input_path, output_path, *, table=None, water_as_nodata=False, water_class=0,
                         band=1, block_size=256, progress=None):
    """Reclassify a land-cover raster (default: MCD12Q1 LC_Type5 -> paper Table 2).

    Parameters
    ----------
    input_path : path
        Land-cover raster; ``band`` is read (MCD12Q1 exports may hold several LC types).
    output_path : path
        Single-band float32 GeoTIFF (NaN nodata) on the input grid.
    table : str or list, optional
        Reclassification text (see :func:`parse_reclass_table`) or parsed entries; default
        :data:`TABLE2`.
    water_as_nodata : bool
        Write the new class ``water_class`` (0 = water in Table 2) as nodata, so it is excluded
        downstream as the paper does.
    band : int
    block_size : int
    progress : Progress, optional

    Returns
    -------
    dict: ``class_counts`` {new class: pixels}, ``nodata_pixels``.
    """
    progress = Progress.wrap(progress)
    entries = parse_reclass_table(TABLE2 if table is None else table) if not isinstance(table, list) else table
    nodata_classes = (water_class,) if water_as_nodata else ()
    check_outputs([(output_path, "raster")], inputs=[input_path])
    src = open_raster(input_path, "land-cover raster")
    counts = {}
    seen = set()
    with src:
        if not 1 <= int(band) <= src.count:
            raise SmdError(f"{input_path} has {src.count} band(s); band {band} does not exist.")
        grid = grid_profile(src)
        windows = list(block_windows(grid["width"], grid["height"], block_size))
        with open_series_writer(output_path, grid, 1) as dst:
            for done, window in enumerate(windows):
                progress.check()
                values = read_masked(src, int(band), window)
                if len(seen) < 20:
                    seen.update(np.unique(values[np.isfinite(values)])[:20].tolist())
                result = reclassify_array(values, entries, nodata_classes=nodata_classes)
                classes, pixel_counts = np.unique(result[np.isfinite(result)], return_counts=True)
                for value, count in zip(classes, pixel_counts):
                    counts[int(value)] = counts.get(int(value), 0) + int(count)
                dst.write(result, 1, window=window)
                progress.update((done + 1) / len(windows), f"Reclassifying land cover: block {done + 1}/{len(windows)}")
            if not counts:
                found = "no valid pixel" if not seen else "values " + ", ".join(f"{v:g}" for v in sorted(seen)[:10])
                raise SmdError(
                    f"Reclassifying {input_path} gives no classified pixel (the input has {found}"
                    f"{'' if not water_as_nodata else ', and water is written as nodata'}); the output "
                    "would be empty. Check the band and the reclassification table (every input class "
                    "needs an entry).")
    total = grid["width"] * grid["height"]
    return {"class_counts": dict(sorted(counts.items())), "nodata_pixels": total - sum(counts.values())}
