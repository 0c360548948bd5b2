"""Reading an input series once for many dates (preprocess).

Multi-band GeoTIFFs are pixel-interleaved by default (GDAL, rasterio and most exporters write
``INTERLEAVE=PIXEL``): every compressed block holds all bands, so reading one band decompresses
the whole block, and warping date after date decompresses every block once per date.
:class:`SeriesWarper` reads the bands of many dates in one call (each block decompressed once per
chunk of dates) and warps them in one GDAL warp; when the input already lies on the target grid
(same CRS, same pixel size, pixel edges aligned, the grid inside the input) it copies the pixels
without warping, which gives the warp's output to the last bit (nodata -> NaN, float32).

Memory: a chunk holds ``bands_per_chunk`` source bands and as many warped bands; the chunk size
comes from a byte budget (:data:`CHUNK_BUDGET_BYTES`).
"""
import math

import numpy as np

#: bytes one SeriesWarper may hold for a chunk of dates (source + warped bands)
CHUNK_BUDGET_BYTES = 128 * 1024 * 1024
#: how far (in pixels) the input's pixel edges may be from the grid's and still count as aligned
ALIGN_TOLERANCE = 1e-6


def aligned_window(src, grid):
    """The window of ``src`` that is ``grid`` pixel for pixel, or None when a warp is needed.

    Same CRS, same pixel size and orientation, integer pixel offset, no rotation, and the grid
    entirely inside the input.
    """
    from rasterio.windows import Window

    if src.crs is None or grid.crs is None or src.crs != grid.crs:
        return None
    a, b, c, d, e, f = tuple(src.transform)[:6]
    ga, gb, gc, gd, ge, gf = tuple(grid.transform)[:6]
    if b != 0 or d != 0 or gb != 0 or gd != 0:
        return None
    if not (math.isclose(a, ga, rel_tol=0, abs_tol=abs(a) * 1e-9)
            and math.isclose(e, ge, rel_tol=0, abs_tol=abs(e) * 1e-9)):
        return None
    col = (gc - c) / a
    row = (gf - f) / e
    if abs(col - round(col)) > ALIGN_TOLERANCE or abs(row - round(row)) > ALIGN_TOLERANCE:
        return None
    col, row = int(round(col)), int(round(row))
    if col < 0 or row < 0 or col + grid.width > src.width or row + grid.height > src.height:
        return None
    return Window(col, row, grid.width, grid.height)


def is_nodata(values, nodata):
    """Pixels equal to ``nodata`` (or NaN)."""
    missing = np.isnan(values) if values.dtype.kind == "f" else np.zeros(values.shape, dtype=bool)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        missing |= values == np.asarray(nodata).astype(values.dtype)
    return missing


class SeriesWarper:
    """Bands of one input raster on ``grid``, read and warped many dates at a time.

    Parameters
    ----------
    src : rasterio dataset (open)
    nodata : number, NaN or None
        The input's nodata (NaN for float inputs without one), as the per-band warp used.
    grid : core.grids.Grid
        Target grid.
    resampling : rasterio.enums.Resampling
    order : list of int
        Band numbers in the order they will be asked for (the dates' bands); a chunk is the next
        ``bands_per_chunk`` of them.
    budget_bytes : int
    reading : callable(path, what) -> context manager or None
        Turns GDAL errors into messages naming the file (``core.rasters.reading``).

    ``get(band)`` returns float32 (grid.height, grid.width), NaN where no data: the same array
    as a per-band ``reproject`` of that band.
    """

    def __init__(self, src, nodata, grid, resampling, order, *, budget_bytes=CHUNK_BUDGET_BYTES,
                 reading=None):
        self.src = src
        self.nodata = nodata
        self.grid = grid
        self.resampling = resampling
        self.order = list(order)
        self.reading = reading
        self.window = aligned_window(src, grid)
        source_pixels = grid.width * grid.height if self.window is not None else src.width * src.height
        itemsize = max(4, np.dtype(src.dtypes[0]).itemsize)
        per_band = source_pixels * itemsize + grid.width * grid.height * 4
        self.bands_per_chunk = max(1, min(len(self.order) or 1, int(budget_bytes // max(1, per_band))))
        self._chunk = {}
        self._position = 0
        self.reads = 0   # read calls made (a chunk = one call)

    @property
    def copies(self):
        """True when the input lies on the grid: pixels are copied, not warped."""
        return self.window is not None

    def get(self, band):
        if band not in self._chunk:
            self._load(band)
        return self._chunk.pop(band)

    def close(self):
        """Nothing to release: the source stays open with the caller (as DaskSeriesWarper.close)."""

    def _context(self):
        import contextlib

        if self.reading is None:
            return contextlib.nullcontext()
        return self.reading(self.src.name, "input raster")

    def _next_bands(self, band):
        if band in self.order[self._position:]:
            start = self._position + self.order[self._position:].index(band)
        else:
            start = None
        if start is None:
            return [band]
        bands = self.order[start:start + self.bands_per_chunk]
        self._position = start + len(bands)
        return bands

    def _load(self, band):
        bands = self._next_bands(band)
        unique = list(dict.fromkeys(bands))
        self.reads += 1
        with self._context():
            if self.window is not None:
                values = self.src.read(unique, window=self.window)
                out = values.astype("float32")
                for k in range(out.shape[0]):
                    out[k][is_nodata(values[k], self.nodata)] = np.nan
            else:
                out = self._warp(self.src.read(unique))
        self._chunk = {b: out[k] for k, b in enumerate(unique)}

    def _warp(self, source):
        from rasterio.warp import reproject

        destination = np.full((source.shape[0], self.grid.height, self.grid.width), np.nan, dtype="float32")
        reproject(source=source, destination=destination, src_transform=self.src.transform,
                  src_crs=self.src.crs, src_nodata=self.nodata, dst_transform=self.grid.transform,
                  dst_crs=self.grid.crs, dst_nodata=np.nan, resampling=self.resampling,
                  # each band's nodata on its own, as a per-band warp sees it (GDAL's default for
                  # several bands counts a pixel as nodata only when every band is)
                  UNIFIED_SRC_NODATA="NO")
        return destination


class DaskSeriesWarper:
    """:class:`SeriesWarper` with the reading and warping done by Dask workers, same ``get``.

    The bands of ``order`` are split into the chunks a local SeriesWarper would read, each chunk
    is one task (:func:`warp_bands_task`, run on a worker against ``path``, which every worker
    must be able to open) and the next ``ahead`` chunks are submitted before they are needed.
    Each band is the same array as the local warp gives.
    """

    def __init__(self, client, path, src, nodata, grid, resampling, order, *, budget_bytes=CHUNK_BUDGET_BYTES,
                 progress, ahead=2):
        from .cluster import ordered_results

        local = SeriesWarper(src, nodata, grid, resampling, order, budget_bytes=budget_bytes)
        self.copies = local.copies
        self.order = list(order)
        step = local.bands_per_chunk
        self._chunks = [self.order[k:k + step] for k in range(0, len(self.order), step)]
        self._results = ordered_results(
            client, warp_bands_task, [tuple(bands) for bands in self._chunks], progress=progress,
            args=(path, nodata, grid, resampling, budget_bytes), ahead=ahead, label="warp")
        self._chunk = {}
        self._position = 0
        self._closed = False

    def get(self, band):
        if band not in self._chunk:
            if self._position >= len(self._chunks) or band not in self._chunks[self._position]:
                raise ValueError(f"band {band} asked out of the order given to the warper")
            values = next(self._results)
            self._chunk = {b: values[k] for k, b in enumerate(dict.fromkeys(self._chunks[self._position]))}
            self._position += 1
        return self._chunk.pop(band)

    def close(self):
        """Cancel the chunks read ahead and not used (a failed or cancelled run)."""
        self._results.close()


def warp_bands_task(bands, path, nodata, grid, resampling, budget_bytes):
    """Dask task: float32 (len(unique bands), grid.height, grid.width) of ``bands`` of ``path``
    on ``grid``, exactly as :class:`SeriesWarper` gives them."""
    from .rasters import open_raster, reading

    with open_raster(path, "input raster") as src:
        warper = SeriesWarper(src, nodata, grid, resampling, list(bands), budget_bytes=budget_bytes,
                              reading=reading)
        return np.stack([warper.get(band) for band in dict.fromkeys(bands)])
