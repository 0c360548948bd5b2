"""Terrain partitions: named polygons, and which partition each grid cell belongs to.

Core takes partitions as plain data (names, GeoJSON geometries, CRS WKT) so the Processing
layer can build them from a QgsVectorLayer and the model file can store them as JSON.
"""
import json
import os

import numpy as np

from .common import SmdError
from .grids import parse_crs

OUTSIDE = -1
SUPERSAMPLING = 10


class Partitions:
    """Named partition polygons in one CRS.

    Parameters
    ----------
    names : list of str
        One unique name per partition; the partition index is the position in this list.
    geometries : list of dict
        GeoJSON geometries (Polygon / MultiPolygon), same length as ``names``.
    crs : str
        CRS of the geometries (WKT, or anything ``rasterio.crs.CRS.from_user_input`` accepts).
    feature_ids : list, optional
        Feature ids of the source layer (same length), named in the error messages.
    check_geometries : bool
        Refuse empty, non-polygon and invalid (OGR/GEOS ``IsValid``) geometries.

    Raises
    ------
    SmdError
        No partitions, empty or repeated names, a geometry that is not a valid polygon.
    """

    def __init__(self, names, geometries, crs, *, feature_ids=None, check_geometries=True, source_path=None):
        #: the file the partitions were read from (outputs are never written over it), or None
        self.source_path = source_path
        raw_names = list(names)
        geometries = list(geometries)
        # ``feature_ids`` (optional, same length) only improve the messages: "feature 7"
        labels = list(feature_ids) if feature_ids is not None else list(range(1, len(raw_names) + 1))
        if not raw_names:
            raise SmdError("No partitions given: the partition layer has no features.")
        if len(raw_names) != len(geometries):
            raise SmdError(f"{len(raw_names)} partition names but {len(geometries)} geometries.")
        empty = [str(label) for label, name in zip(labels, raw_names)
                 if name is None or str(name).strip() in ("", "NULL")]
        if empty:
            raise SmdError(f"Partition feature(s) {', '.join(empty[:10])} have an empty name; give "
                           "every partition polygon a name in the partition name field.")
        names = [str(n) for n in raw_names]
        where = {}
        for label, name in zip(labels, names):
            where.setdefault(name, []).append(str(label))
        repeated = {name: ids for name, ids in where.items() if len(ids) > 1}
        if repeated:
            detail = "; ".join(f"{name!r} (features {', '.join(ids[:10])})"
                               for name, ids in sorted(repeated.items())[:10])
            raise SmdError(f"Partition names must be unique; repeated: {detail}. Give each region "
                           "its own name, or merge the features of one region first (Vector > "
                           "Geoprocessing Tools > Dissolve, by the name field).")
        for label, name, geometry in zip(labels, names, geometries):
            if check_geometries:
                _check_geometry(name, label, geometry)
            elif not isinstance(geometry, dict) or "type" not in geometry:
                raise SmdError(f"Partition {name!r} has no valid GeoJSON geometry.")
        self.names = names
        self.geometries = geometries
        self.crs = parse_crs(crs, "Partition CRS").to_wkt()

    def __len__(self):
        return len(self.names)

    def index(self, name):
        try:
            return self.names.index(name)
        except ValueError:
            raise SmdError(f"No partition {name!r}; partitions are {', '.join(self.names)}.") from None

    def to_json(self):
        """JSON-ready dict ``{"names", "geometries", "crs"}``."""
        return {"names": list(self.names), "geometries": list(self.geometries), "crs": self.crs}

    @classmethod
    def from_json(cls, data):
        try:
            # stored in a model file: checked when the model was trained
            return cls(data["names"], data["geometries"], data["crs"], check_geometries=False)
        except (KeyError, TypeError) as err:
            raise SmdError("Invalid partitions description: needs names, geometries, crs.") from err

    @classmethod
    def from_features(cls, names, geometries, crs, *, feature_ids=None, source_path=None,
                      label="The partition layer"):
        """Partitions from features (one name and GeoJSON polygon each), the way every reader
        builds them: features sharing a name are merged into one partition; empty names and
        geometries that are not valid polygons are refused naming the feature."""
        names, geometries = list(names), list(geometries)
        feature_ids = list(feature_ids) if feature_ids is not None else list(range(1, len(names) + 1))
        if not names:
            raise SmdError(f"{label} has no polygons.")
        names, geometries, feature_ids = _merge_same_names(names, geometries, feature_ids, label)
        return cls(names, geometries, crs, feature_ids=feature_ids, source_path=source_path)

    @classmethod
    def from_file(cls, path, field, layer=None):
        """Read partitions from any OGR vector file (GeoPackage, Shapefile, GeoJSON, ...).

        Features sharing a name in ``field`` are merged into one partition.

        Parameters
        ----------
        path : path
        field : str
            Attribute holding the partition name.
        layer : str or int or None
            Layer name or index; default the first layer.
        """
        from osgeo import ogr

        path = os.fspath(path)
        if not os.path.exists(path):
            raise SmdError(f"Partition file {path!r} does not exist.")
        try:
            source = ogr.Open(path)
        except RuntimeError as err:  # when another module enabled GDAL exceptions
            raise SmdError(f"Cannot open {path!r} as a vector file: {err}") from err
        if source is None:
            raise SmdError(f"Cannot open {path!r} as a vector file.")
        try:
            vector = source.GetLayer(0 if layer is None else layer)
            if vector is None:
                raise SmdError(f"{path!r} has no layer {layer!r}.")
            definition = vector.GetLayerDefn()
            fields = [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]
            reference = vector.GetSpatialRef()
            check_partition_layer(os.path.basename(path), fields, field, has_crs=reference is not None)
            names, geometries, numbers = [], [], []
            for number, feature in enumerate(vector, start=1):
                geometry = feature.GetGeometryRef()
                if geometry is None or geometry.IsEmpty():
                    continue
                names.append(feature.GetField(field))
                geometries.append(json.loads(geometry.ExportToJson()))
                numbers.append(number)
            if not names:
                raise SmdError(f"{os.path.basename(path)} has no features with a geometry; the "
                               "partition layer is empty.")
            return cls.from_features(names, geometries, reference.ExportToWkt(), feature_ids=numbers,
                                     source_path=path, label=os.path.basename(path))
        finally:
            source = None  # closes the OGR data source


def _merge_same_names(names, geometries, feature_ids, label):
    """Features sharing a name become one partition (OGR union); names checked first."""
    from osgeo import ogr

    merged, first_ids = {}, {}
    for name, geometry, number in zip(names, geometries, feature_ids):
        if name is None or str(name).strip() in ("", "NULL"):
            raise SmdError(f"{label}: feature {number} has no partition name; every partition "
                           "polygon needs a name in the partition name field.")
        name = str(name)
        _check_geometry(name, number, geometry)
        shape = ogr.CreateGeometryFromJson(json.dumps(geometry))
        merged[name] = merged[name].Union(shape) if name in merged else shape
        first_ids.setdefault(name, number)
    ordered = list(merged)
    return (ordered, [json.loads(merged[n].ExportToJson()) for n in ordered],
            [first_ids[n] for n in ordered])


def check_partition_layer(label, fields, field, *, has_crs):
    """The one check of a partition layer before its features are read: the name field is
    given and exists, and the layer has a CRS. SmdError naming ``label`` (the file or "The
    partition layer") otherwise; used by :meth:`Partitions.from_file` and the Processing shells.
    """
    fields = [str(f) for f in fields]
    available = ", ".join(fields) or "(none)"
    if not field:
        raise SmdError(f"Choose the partition name field of {_lower_first(label)} (the attribute holding "
                       f"the region names); available fields: {available}.")
    if field not in fields:
        raise SmdError(f"{label} has no field {field!r}; available fields: {available}.")
    if not has_crs:
        raise SmdError(f"{label} has no coordinate reference system; assign one before using it as "
                       "partitions.")


def _lower_first(label):
    return label[:1].lower() + label[1:] if label.startswith("The ") else label


def _check_geometry(name, label, geometry):
    """SmdError unless ``geometry`` is a non-empty, valid GeoJSON (Multi)Polygon."""
    if not isinstance(geometry, dict) or geometry.get("type") not in ("Polygon", "MultiPolygon"):
        kind = geometry.get("type") if isinstance(geometry, dict) else type(geometry).__name__
        raise SmdError(f"Partition {name!r} (feature {label}) is not a polygon ({kind}); the "
                       "partition layer must hold polygons.")
    try:
        from osgeo import ogr
    except ImportError:  # no OGR bindings: the rasteriser will judge the geometry
        return
    try:
        shape = ogr.CreateGeometryFromJson(json.dumps(geometry))
    except (RuntimeError, TypeError, ValueError):  # GDAL exceptions may be on
        shape = None
    if shape is None:
        raise SmdError(f"Partition {name!r} (feature {label}) has a geometry that cannot be read "
                       "(broken coordinates).")
    if shape.IsEmpty():
        raise SmdError(f"Partition {name!r} (feature {label}) has an empty geometry.")
    try:
        valid = shape.IsValid()
    except RuntimeError:
        valid = False
    if not valid:
        raise SmdError(f"Partition {name!r} (feature {label}) has an invalid geometry (e.g. a "
                       "self-intersecting ring or a ring with fewer than 4 points); repair it "
                       "first (Vector > Geometry Tools > Fix Geometries) and use the result.")


def _burn(shapes, shape, transform):
    from rasterio.features import rasterize

    if not shapes:
        return np.full(shape, OUTSIDE, dtype="int16")
    # GDAL's default rule burns a pixel when its centre is inside the polygon; where partitions
    # overlap, the later one wins.
    return rasterize(shapes, out_shape=shape, transform=transform, fill=OUTSIDE, dtype="int16",
                     all_touched=False)


def partition_index_on_grid(partitions, grid, mode="centre", progress=None):
    """Partition index (position in ``partitions.names``) of every cell of ``grid``.

    Parameters
    ----------
    partitions : Partitions
    grid : Grid
    mode : {"centre", "majority"}
        ``"centre"``: the partition containing the cell centre (fine pixels).
        ``"majority"``: the partition covering most of the cell's area (coarse cells).

    Returns
    -------
    numpy.ndarray of int16, shape (grid.height, grid.width); -1 outside every partition.
    """
    from affine import Affine
    from rasterio.warp import transform_geom

    if mode not in ("centre", "center", "majority"):
        raise SmdError(f"Unknown partition assignment mode {mode!r}; use 'centre' or 'majority'.")
    if len(partitions) > np.iinfo("int16").max:
        raise SmdError("Too many partitions (more than 32767).")
    src_crs = parse_crs(partitions.crs)
    shapes = []
    for index, geometry in enumerate(partitions.geometries):
        try:
            moved = geometry if src_crs == grid.crs else transform_geom(src_crs, grid.crs, geometry)
        except Exception as err:  # rasterio/GDAL raise various errors for impossible transforms
            raise SmdError(f"Partition {partitions.names[index]!r} cannot be transformed to the "
                           f"grid CRS: {err}") from err
        shapes.append((moved, index))

    if mode != "majority":
        return _burn(shapes, grid.shape, grid.transform)

    # Majority of area, approximated by the majority of 10 x 10 sub-cells per cell (sub-cell
    # centres rule, so the area share is exact to about 1 % of a cell). Done here with numpy
    # rather than GDAL's mode resampling because GDAL's tie-breaking is unspecified. A cell
    # gets the partition with the most sub-cells (lowest index on ties) when that partition
    # covers more sub-cells than the area outside every partition; otherwise -1.
    factor = SUPERSAMPLING
    fine_transform = grid.transform * Affine.scale(1.0 / factor)
    result = np.full(grid.shape, OUTSIDE, dtype="int16")
    rows_per_chunk = max(1, 4_000_000 // max(1, grid.width * factor * factor))
    n_labels = len(partitions) + 1  # column 0 counts sub-cells outside every partition
    for row0 in range(0, grid.height, rows_per_chunk):
        rows = min(rows_per_chunk, grid.height - row0)
        transform = fine_transform * Affine.translation(0, row0 * factor)
        labels = _burn(shapes, (rows * factor, grid.width * factor), transform)
        cells = (labels.reshape(rows, factor, grid.width, factor).transpose(0, 2, 1, 3)
                 .reshape(rows * grid.width, factor * factor).astype(np.int64) + 1)
        offsets = np.arange(cells.shape[0], dtype=np.int64)[:, None] * n_labels
        counts = np.bincount((cells + offsets).ravel(), minlength=cells.shape[0] * n_labels)
        counts = counts.reshape(cells.shape[0], n_labels)
        best = counts[:, 1:].argmax(axis=1)  # the most-covering partition (lowest index on ties)
        best_count = counts[np.arange(len(best)), best + 1]
        chosen = np.where(best_count > counts[:, 0], best, OUTSIDE)
        result[row0:row0 + rows] = chosen.reshape(rows, grid.width)
        if progress is not None:
            progress.check()
    return result
