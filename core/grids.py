"""Raster grids: the fine (predictor) grid and the coarse (soil-moisture) grid of a dataset.

A :class:`Grid` is a CRS + affine transform + size. It serialises to JSON as WKT plus the six
affine coefficients so prepared datasets and model files can store it as plain JSON.
"""
import math

from .common import SmdError

# Tolerance (in cells) when snapping extents to a grid: coordinates that differ from a grid
# line by floating-point noise must not add a whole row or column.
_SNAP_TOLERANCE = 1e-6


def parse_crs(value, what="CRS"):
    """A rasterio CRS from a CRS, 'EPSG:xxxx', WKT or PROJ text; SmdError if it is not one."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    if isinstance(value, CRS):
        return value
    if value is None or (isinstance(value, str) and not value.strip()):
        raise SmdError(f"No {what} given.")
    try:
        return CRS.from_user_input(value)
    except (CRSError, ValueError, TypeError) as err:
        raise SmdError(f"{what} {value!r} is not a valid coordinate reference system "
                       "(use e.g. 'EPSG:32650' or a WKT string).") from err


class Grid:
    """A raster grid: ``crs`` (rasterio CRS), ``transform`` (Affine), ``width``, ``height``.

    Parameters
    ----------
    crs : rasterio.crs.CRS or str
        Coordinate reference system (anything :func:`parse_crs` accepts).
    transform : affine.Affine or sequence of 6 numbers
        Pixel-to-map transform (a, b, c, d, e, f), north-up grids have b = d = 0 and e < 0.
    width, height : int
        Number of columns and rows.
    """

    def __init__(self, crs, transform, width, height):
        from affine import Affine

        self.crs = parse_crs(crs, "Grid CRS")
        if not isinstance(transform, Affine):
            transform = Affine(*list(transform)[:6])
        self.transform = transform
        self.width = int(width)
        self.height = int(height)
        if self.width <= 0 or self.height <= 0:
            raise SmdError(f"A grid needs a positive size, got {self.width} x {self.height} cells.")

    # -- construction / serialisation -------------------------------------------------------
    @classmethod
    def from_dataset(cls, src):
        """The grid of an open rasterio dataset (SmdError if it has no CRS)."""
        if src.crs is None:
            raise SmdError(f"{src.name} has no coordinate reference system; assign one "
                           "(e.g. with gdal_edit.py -a_srs EPSG:xxxx or QGIS 'Assign projection').")
        return cls(src.crs, src.transform, src.width, src.height)

    @classmethod
    def from_file(cls, path, what="raster"):
        from .rasters import open_raster

        with open_raster(path, what) as src:
            return cls.from_dataset(src)

    def to_json(self):
        """A JSON-ready dict: ``{"crs": WKT, "transform": [a..f], "width", "height"}``."""
        return {"crs": self.crs.to_wkt(), "transform": [float(v) for v in tuple(self.transform)[:6]],
                "width": self.width, "height": self.height}

    @classmethod
    def from_json(cls, data):
        try:
            return cls(data["crs"], data["transform"], data["width"], data["height"])
        except (KeyError, TypeError) as err:
            raise SmdError(f"Invalid grid description {data!r}: needs crs, transform, width, "
                           "height.") from err

    def profile(self):
        """dict(crs, transform, width, height) for ``rasterio.open(..., 'w', **profile)``."""
        return {"crs": self.crs, "transform": self.transform, "width": self.width,
                "height": self.height}

    # -- geometry -------------------------------------------------------------------------
    @property
    def shape(self):
        return (self.height, self.width)

    @property
    def res(self):
        """(x size, y size) of a cell, both positive."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def bounds(self):
        """rasterio BoundingBox(left, bottom, right, top)."""
        from rasterio.coords import BoundingBox
        from rasterio.transform import array_bounds

        return BoundingBox(*array_bounds(self.height, self.width, self.transform))

    def window_bounds(self, window):
        """BoundingBox of a rasterio Window of this grid."""
        from rasterio.coords import BoundingBox
        from rasterio.windows import bounds

        return BoundingBox(*bounds(window, self.transform))

    def window_transform(self, window):
        from rasterio.windows import transform

        return transform(window, self.transform)

    def subgrid(self, window):
        """The Grid of a window of this grid (same CRS and alignment)."""
        window = window.round_offsets().round_lengths() if hasattr(window, "round_offsets") else window
        return Grid(self.crs, self.window_transform(window), int(window.width), int(window.height))

    def cell_centres(self, window=None):
        """Arrays (x, y) of cell-centre coordinates, shape (rows, cols) of ``window`` or the grid."""
        import numpy as np

        if window is None:
            col_off, row_off, width, height = 0, 0, self.width, self.height
        else:
            col_off, row_off = int(window.col_off), int(window.row_off)
            width, height = int(window.width), int(window.height)
        cols, rows = np.meshgrid(np.arange(col_off, col_off + width) + 0.5,
                                 np.arange(row_off, row_off + height) + 0.5)
        t = self.transform
        return t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f

    def footprint_in(self, crs):
        """Bounds of this grid transformed to ``crs`` (densified edges)."""
        return transform_bounds_safe(self.crs, crs, self.bounds, name="grid")

    def same_as(self, other, tolerance=1e-6):
        """True when ``other`` has the same CRS, size and (within tolerance) transform."""
        if self.shape != other.shape or self.crs != other.crs:
            return False
        return all(abs(x - y) <= tolerance * max(1.0, abs(x))
                   for x, y in zip(tuple(self.transform)[:6], tuple(other.transform)[:6]))

    def __eq__(self, other):
        return isinstance(other, Grid) and self.same_as(other)

    def __repr__(self):
        return (f"Grid({self.crs.to_string()!r}, {tuple(self.transform)[:6]}, width={self.width}, "
                f"height={self.height})")


def transform_bounds_safe(src_crs, dst_crs, bounds, name="raster"):
    """``rasterio.warp.transform_bounds`` with densified edges; SmdError if it cannot be done."""
    from rasterio.warp import transform_bounds

    try:
        result = transform_bounds(src_crs, dst_crs, *bounds, densify_pts=21)
    except Exception as err:  # rasterio raises CRSError / CPLE errors for impossible transforms
        raise SmdError(f"The extent of {name} cannot be transformed to the target CRS: {err}") from err
    if not all(math.isfinite(v) for v in result):
        raise SmdError(f"The extent of {name} falls outside the valid area of the target CRS.")
    return result


def positive_resolution(value):
    """``value`` as a float cell size; SmdError unless it is a positive finite number."""
    try:
        resolution = float(value)
    except (TypeError, ValueError):
        raise SmdError(f"The fine resolution {value!r} is not a number.") from None
    if not (resolution > 0 and math.isfinite(resolution)):
        raise SmdError(f"The fine resolution must be a positive number, got {value!r}.")
    return resolution


def _check_resolution(crs, resolution):
    resolution = positive_resolution(resolution)
    if crs.is_geographic and resolution > 1:
        raise SmdError(
            f"The target CRS {crs.to_string()} is geographic (degrees) but the fine resolution is "
            f"{resolution}: choose a projected target CRS (e.g. UTM) or give the resolution in degrees.")


def intersect_bounds(named_bounds):
    """Intersection of ``[(name, (left, bottom, right, top)), ...]``; SmdError naming files if empty."""
    left = max(b[0] for _, b in named_bounds)
    bottom = max(b[1] for _, b in named_bounds)
    right = min(b[2] for _, b in named_bounds)
    top = min(b[3] for _, b in named_bounds)
    if not (left < right and bottom < top):
        # name the inputs that do not overlap the first one, or all of them
        first_name, first = named_bounds[0]
        apart = [name for name, b in named_bounds[1:]
                 if b[0] >= first[2] or b[2] <= first[0] or b[1] >= first[3] or b[3] <= first[1]]
        names = ", ".join([first_name] + apart) if apart else ", ".join(n for n, _ in named_bounds)
        raise SmdError(f"The inputs do not overlap: {names}. All predictors and the soil-moisture "
                       "raster must cover a common area.")
    return (left, bottom, right, top)


def snapped_grid(crs, bounds, resolution):
    """A north-up grid in ``crs`` covering ``bounds``, edges snapped outward to multiples of
    ``resolution`` (so grids made with the same resolution share their alignment)."""
    from affine import Affine

    crs = parse_crs(crs, "Target CRS")
    _check_resolution(crs, resolution)
    left, bottom, right, top = bounds
    x0 = math.floor(left / resolution + _SNAP_TOLERANCE) * resolution
    x1 = math.ceil(right / resolution - _SNAP_TOLERANCE) * resolution
    y0 = math.floor(bottom / resolution + _SNAP_TOLERANCE) * resolution
    y1 = math.ceil(top / resolution - _SNAP_TOLERANCE) * resolution
    width = max(1, int(round((x1 - x0) / resolution)))
    height = max(1, int(round((y1 - y0) / resolution)))
    return Grid(crs, Affine(resolution, 0.0, x0, 0.0, -resolution, y1), width, height)


def fine_grid_for(named_footprints, target_crs, resolution):
    """The fine grid: intersection of footprints already in ``target_crs``, snapped outward.

    Parameters
    ----------
    named_footprints : list of (name, (left, bottom, right, top))
        Each input's footprint transformed to ``target_crs`` (see :func:`transform_bounds_safe`).
    target_crs : CRS
    resolution : float
        Cell size in target CRS units (FINE_RESOLUTION).
    """
    extent = intersect_bounds(named_footprints)
    return snapped_grid(target_crs, extent, resolution)


def covering_window(grid, bounds, name="raster"):
    """Window of ``grid`` (a north-up grid) with every cell overlapping ``bounds`` (grid CRS).

    SmdError if no cell overlaps.
    """
    from rasterio.windows import Window

    t = grid.transform
    if t.b != 0 or t.d != 0:
        raise SmdError(f"{name} is rotated or sheared; warp it to a north-up grid first.")
    left, bottom, right, top = bounds
    # columns/rows of the bound edges in cell units (x increases to the right, y downward)
    cols = sorted(((left - t.c) / t.a, (right - t.c) / t.a))
    rows = sorted(((top - t.f) / t.e, (bottom - t.f) / t.e))
    col0 = max(0, math.floor(cols[0] + _SNAP_TOLERANCE))
    col1 = min(grid.width, math.ceil(cols[1] - _SNAP_TOLERANCE))
    row0 = max(0, math.floor(rows[0] + _SNAP_TOLERANCE))
    row1 = min(grid.height, math.ceil(rows[1] - _SNAP_TOLERANCE))
    if col1 <= col0 or row1 <= row0:
        raise SmdError(f"{name} has no cell inside the common extent of the inputs; check that it "
                       "covers the same area as the predictors.")
    return Window(col0, row0, col1 - col0, row1 - row0)


def coarse_grid_for(source_grid, fine_grid, name="soil moisture"):
    """The soil-moisture grid cropped to the cells overlapping ``fine_grid``.

    Keeps the source's CRS and native alignment (e.g. EASE-Grid 2.0 9 km).

    Returns
    -------
    (Grid, rasterio.windows.Window)
        The cropped grid and its window in the source raster (to read the target).
    """
    extent = fine_grid.footprint_in(source_grid.crs)
    window = covering_window(source_grid, extent, name)
    return source_grid.subgrid(window), window


def padded_grid(grid, cover, cover_name="coarse grid"):
    """``grid`` extended (same alignment) so it also covers ``cover`` (another Grid).

    Returns (padded Grid, (row_offset, col_offset)) where ``grid`` sits inside the padded one.
    Used to compute coarse valid fractions that count area outside the fine grid as invalid.
    """
    from affine import Affine

    left, bottom, right, top = cover.footprint_in(grid.crs)
    xres, yres = grid.res
    g = grid.bounds
    pad_left = max(0, math.ceil((g.left - left) / xres - _SNAP_TOLERANCE))
    pad_right = max(0, math.ceil((right - g.right) / xres - _SNAP_TOLERANCE))
    pad_top = max(0, math.ceil((top - g.top) / yres - _SNAP_TOLERANCE))
    pad_bottom = max(0, math.ceil((g.bottom - bottom) / yres - _SNAP_TOLERANCE))
    t = grid.transform
    transform = Affine(t.a, t.b, t.c - pad_left * t.a, t.d, t.e, t.f - pad_top * t.e)
    return (Grid(grid.crs, transform, grid.width + pad_left + pad_right,
                 grid.height + pad_top + pad_bottom), (pad_top, pad_left))


def block_windows(width, height, block_size=256):
    """Row-major rasterio Windows of at most ``block_size`` x ``block_size`` pixels covering a grid.

    Outputs are tiled by 256, so multiples of 256 keep writes tile-aligned.
    """
    from rasterio.windows import Window

    if int(block_size) < 1:
        raise SmdError(f"block_size must be a positive number of pixels, got {block_size!r}.")
    block_size = int(block_size)
    for row in range(0, height, block_size):
        for col in range(0, width, block_size):
            yield Window(col, row, min(block_size, width - col), min(block_size, height - row))


# -- EASE-Grid 2.0 global 9 km (M09), the grid of SMAP L4 ------------------------------------
#: NSIDC EASE2_M09km.gpd: cell size and upper-left corner in EPSG:6933 metres, size in cells.
EASE2_EPSG = 6933
M09_CELL_SIZE = 9008.055210146
M09_ULX = -17367530.4451615
M09_ULY = 7314540.8306386
M09_COLUMNS = 3856
M09_ROWS = 1624


def m09_cells_covering(xmin, ymin, xmax, ymax):
    """Global (row0, row1, col0, col1) of the M09 cells touching an EPSG:6933 box (snapped out)."""
    col0 = int(math.floor((xmin - M09_ULX) / M09_CELL_SIZE))
    col1 = int(math.ceil((xmax - M09_ULX) / M09_CELL_SIZE))
    row0 = int(math.floor((M09_ULY - ymax) / M09_CELL_SIZE))
    row1 = int(math.ceil((M09_ULY - ymin) / M09_CELL_SIZE))
    return row0, row1, col0, col1


def m09_grid(row0, row1, col0, col1):
    """The :class:`Grid` of global M09 rows row0..row1-1 and columns col0..col1-1."""
    from affine import Affine

    transform = Affine(M09_CELL_SIZE, 0.0, M09_ULX + col0 * M09_CELL_SIZE,
                       0.0, -M09_CELL_SIZE, M09_ULY - row0 * M09_CELL_SIZE)
    return Grid(f"EPSG:{EASE2_EPSG}", transform, col1 - col0, row1 - row0)
