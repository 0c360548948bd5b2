"""The prepared dataset: a folder of GeoTIFFs on the fine and coarse grids plus ``dataset.json``.

Layout (see DESIGN.md)::

    dataset.json                 manifest: dates, predictors, grids, options
    fine/<name>.tif              every predictor on the fine grid (dynamic: one band per date)
    coarse/<name>.tif            the predictors aggregated onto the coarse (soil-moisture) grid
    coarse/soil_moisture.tif     the target on the coarse grid, one band per date, NaN invalid
    coarse/valid_fraction.tif    per date, fraction of each coarse cell covered by fine pixels
                                 where every predictor is valid (diagnostics)

``doy`` (day of year) has no file: it is computed from the date when features are read.
"""
import dataclasses
import json
import math
import os
import time
import uuid

from .common import SmdError, day_of_year
from .grids import Grid
from .rasters import open_raster, reading

FORMAT = "smdownscale-dataset"
#: 2: every raster carries the dataset's identity (``dataset_id``), checked when opened
VERSION = 2
#: GeoTIFF metadata item holding the ``dataset_id`` of the dataset a raster belongs to
DATASET_ID_TAG = "SMDOWNSCALE_DATASET_ID"
#: attempts at opening a dataset that another run is replacing at that moment
_OPEN_ATTEMPTS = 3
MANIFEST = "dataset.json"
DOY = "doy"
TARGET = "soil_moisture"
VALID_FRACTION = "valid_fraction"
CONTINUOUS = "continuous"
CATEGORICAL = "categorical"
KINDS = (CONTINUOUS, CATEGORICAL)
#: what to do about a dataset raster that cannot be read
_RERUN_HINT = "The file is damaged; run preprocess again."


@dataclasses.dataclass(frozen=True)
class Predictor:
    """One predictor of a dataset or a model: the record ``dataset.json`` and model manifests hold.

    ``name``: the file stem (``doy`` for the derived day of year); ``kind``: ``continuous`` or
    ``categorical``; ``dynamic``: one value per date (else static); ``categories``: the class
    values of a categorical predictor; ``derived``: computed, no raster (``doy``); ``source``: the
    input file name it was prepared from. JSON (``to_json``/``from_json``) keeps the manifest shape:
    ``categories`` only for categorical predictors, ``derived`` only when true, ``source`` only
    when known.
    """

    name: str
    kind: str
    dynamic: bool
    categories: tuple = ()
    derived: bool = False
    source: str = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise SmdError(f"A predictor needs a name, got {self.name!r}.")
        if self.kind not in KINDS:
            raise SmdError(f"Predictor {self.name!r} has kind {self.kind!r} ({' or '.join(KINDS)}).")
        for flag in ("dynamic", "derived"):
            if not isinstance(getattr(self, flag), bool):
                raise SmdError(f"Predictor {self.name!r}: {flag} must be true or false, got "
                               f"{getattr(self, flag)!r}.")
        categories = tuple(self.categories or ())
        if not all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c)
                   for c in categories):
            raise SmdError(f"Predictor {self.name!r}: categories must be numbers, got {list(categories)!r}.")
        object.__setattr__(self, "categories", categories)
        if self.source is not None and not isinstance(self.source, str):
            raise SmdError(f"Predictor {self.name!r}: source must be a file name, got {self.source!r}.")

    @property
    def categorical(self):
        return self.kind == CATEGORICAL

    def to_json(self):
        """The manifest entry, e.g. ``{"name": "lc", "kind": "categorical", "dynamic": false,
        "source": "lc.tif", "categories": [1, 2]}``."""
        entry = {"name": self.name, "kind": self.kind, "dynamic": self.dynamic}
        if self.source is not None:
            entry["source"] = self.source
        if self.categorical:
            entry["categories"] = list(self.categories)
        if self.derived:
            entry["derived"] = True
        return entry

    @classmethod
    def from_json(cls, entry):
        """A Predictor from a manifest entry; SmdError when it is not one."""
        if isinstance(entry, cls):
            return entry
        if not isinstance(entry, dict):
            raise SmdError(f"A predictor entry must be an object, got {entry!r}.")
        missing = [key for key in ("name", "kind", "dynamic") if key not in entry]
        if missing:
            raise SmdError(f"Predictor entry {entry!r} lacks {', '.join(missing)}.")
        categories = entry.get("categories") or ()  # optional: only categorical entries have it
        if not isinstance(categories, (list, tuple)):
            raise SmdError(f"Predictor {entry['name']!r}: categories must be a list, got {categories!r}.")
        return cls(name=entry["name"], kind=entry["kind"], dynamic=entry["dynamic"],
                   categories=tuple(categories), derived=entry.get("derived", False),
                   source=entry.get("source"))


def fine_path(folder, name):
    return os.path.join(folder, "fine", f"{name}.tif")


def coarse_path(folder, name):
    return os.path.join(folder, "coarse", f"{name}.tif")


class Dataset:
    """Read access to a prepared dataset folder.

    Open with :meth:`Dataset.open`. Raster handles are opened lazily and kept until
    :meth:`close` (or the end of a ``with`` block), so block-wise reading stays cheap.
    """

    def __init__(self, folder, manifest):
        self.folder = os.path.abspath(folder)
        self.manifest = manifest
        self._handles = {}
        path = os.path.join(self.folder, MANIFEST)
        try:
            self.dataset_id = str(manifest["dataset_id"])
            self.dates = [str(date) for date in manifest["dates"]]
            if not isinstance(manifest["predictors"], list):
                raise SmdError("predictors is not a list")
            self.predictors = [Predictor.from_json(p) for p in manifest["predictors"]]
            self.fine_grid = Grid.from_json(manifest["fine_grid"])
            self.coarse_grid = Grid.from_json(manifest["coarse_grid"])
            self.min_valid_fraction = float(manifest["min_valid_fraction"])
            self.mask_classes = {str(k): list(v) for k, v in manifest["mask_classes"].items()}
            self.target = str(manifest["target"])
            self._by_name = {p.name: p for p in self.predictors}
        except SmdError as err:
            raise SmdError(f"{path} is damaged ({err}); run preprocess again.") from err
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as err:
            raise SmdError(f"{path} is damaged ({type(err).__name__}: {err}); run preprocess "
                           "again.") from err
        if not self.dates or len(set(self.dates)) != len(self.dates):
            raise SmdError(f"{path} is damaged (no dates or repeated dates); run preprocess again.")
        if len(self._by_name) != len(self.predictors):
            raise SmdError(f"{path} is damaged (repeated predictor names); run preprocess again.")

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, folder):
        """Open a prepared dataset folder; SmdError if it is missing, damaged or not a dataset.

        Every raster is opened here and must carry the manifest's ``dataset_id``: a dataset
        being replaced by another run at this moment is either read whole, old or new, or
        refused - never a mix of the two (open handles keep reading the generation they opened).
        """
        for attempt in range(_OPEN_ATTEMPTS):
            dataset = cls(folder, _read_manifest(folder))
            try:
                dataset._open_rasters()
                return dataset
            except _GenerationChanged:
                dataset.close()
                time.sleep(0.2 * (attempt + 1))
        raise SmdError(f"The dataset in {folder!r} is being replaced by another run (its files "
                       "belong to two different preprocess runs); wait until that run has finished "
                       "and try again.")

    def _open_rasters(self):
        missing = [p for p in self.raster_paths() if not os.path.isfile(p)]
        if missing:
            self._maybe_changed()
            raise SmdError(f"The dataset in {self.folder!r} is incomplete; missing: "
                           f"{', '.join(os.path.relpath(p, self.folder) for p in missing)}. Run "
                           "preprocess again.")
        for path in self.raster_paths():
            self._handle(path)

    def _maybe_changed(self):
        """Raise _GenerationChanged when dataset.json is no longer the one this object read."""
        try:
            if _read_manifest(self.folder).get("dataset_id") != self.dataset_id:
                raise _GenerationChanged()
        except SmdError:
            raise _GenerationChanged() from None

    def raster_paths(self):
        """Every raster the manifest promises (valid_fraction is optional, not listed)."""
        paths = []
        for predictor in self.predictors:
            if not predictor.derived:
                paths += [fine_path(self.folder, predictor.name), coarse_path(self.folder, predictor.name)]
        paths.append(coarse_path(self.folder, self.target))
        return paths

    def close(self):
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    # -- metadata --------------------------------------------------------------------------
    @property
    def predictor_names(self):
        return [p.name for p in self.predictors]

    @property
    def categorical_names(self):
        return [p.name for p in self.predictors if p.categorical]

    def predictor(self, name):
        try:
            return self._by_name[name]
        except KeyError:
            raise SmdError(f"The dataset has no predictor {name!r}; it has "
                           f"{', '.join(self.predictor_names)}.") from None

    def categories(self, name):
        """Class values of a categorical predictor (sorted), as recorded by preprocess."""
        return list(self.predictor(name).categories)

    def date_index(self, date):
        try:
            return self.dates.index(str(date)[:10])
        except ValueError:
            raise SmdError(f"The dataset has no date {date!r}; its dates run from "
                           f"{self.dates[0]} to {self.dates[-1]}.") from None

    def fine_block_windows(self, block_size=512):
        """rasterio Windows tiling the fine grid in blocks of at most ``block_size`` pixels."""
        from .grids import block_windows

        return block_windows(self.fine_grid.width, self.fine_grid.height, max(1, int(block_size)))

    # -- reading ---------------------------------------------------------------------------
    def _handle(self, path):
        if path not in self._handles:
            try:
                handle = open_raster(path, "dataset raster", hint=_RERUN_HINT)
            except SmdError:
                self._maybe_changed()
                raise
            if handle.tags().get(DATASET_ID_TAG) != self.dataset_id:
                handle.close()
                self._maybe_changed()
                raise SmdError(f"The dataset raster {path} does not belong to the dataset "
                               f"described by {MANIFEST} (it was copied in or edited); run "
                               "preprocess again.")
            self._handles[path] = handle
        return self._handles[path]

    def _band(self, name, date_index):
        self._check_date_index(date_index)
        return date_index + 1 if self.predictor(name).dynamic else 1

    def _check_date_index(self, date_index):
        if not 0 <= int(date_index) < len(self.dates):
            raise SmdError(f"Date index {date_index} is out of range (the dataset has "
                           f"{len(self.dates)} dates).")

    def _doy(self, date_index, shape):
        import numpy as np

        self._check_date_index(date_index)
        return np.full(shape, day_of_year(self.dates[date_index]), dtype="float32")

    def read_fine(self, name, date_index, window=None):
        """One predictor on the fine grid (or a window of it), float32 (rows, cols), NaN nodata.

        Static predictors ignore ``date_index``; ``doy`` is computed from the date.
        """
        if name == DOY and self.predictor(name).derived:
            shape = self.fine_grid.shape if window is None else (int(window.height), int(window.width))
            return self._doy(date_index, shape)
        band = self._band(name, date_index)
        path = fine_path(self.folder, name)
        with reading(path, "dataset raster", hint=_RERUN_HINT):
            return self._handle(path).read(band, window=window).astype("float32", copy=False)

    def read_coarse(self, name, date_index):
        """One predictor aggregated on the coarse grid, float32 (h, w), NaN where invalid."""
        if name == DOY and self.predictor(name).derived:
            return self._doy(date_index, self.coarse_grid.shape)
        band = self._band(name, date_index)
        path = coarse_path(self.folder, name)
        with reading(path, "dataset raster", hint=_RERUN_HINT):
            return self._handle(path).read(band).astype("float32", copy=False)

    def read_target(self, date_index):
        """Soil moisture on the coarse grid for one date, float32 (h, w), NaN where invalid."""
        self._check_date_index(date_index)
        path = coarse_path(self.folder, self.target)
        with reading(path, "dataset raster", hint=_RERUN_HINT):
            return self._handle(path).read(date_index + 1).astype("float32", copy=False)

    def read_valid_fraction(self, date_index):
        """Fraction of each coarse cell covered by fine pixels valid in every predictor, or None."""
        path = coarse_path(self.folder, VALID_FRACTION)
        if not os.path.isfile(path):
            return None
        self._check_date_index(date_index)
        with reading(path, "dataset raster", hint=_RERUN_HINT):
            return self._handle(path).read(date_index + 1).astype("float32", copy=False)

    def fine_features(self, date_index, window=None):
        """Feature matrix of a fine window: float32 (n_pixels, n_predictors), predictor order,
        pixels in row-major order, NaN where a predictor has no data (``doy`` always filled)."""
        import numpy as np

        shape = self.fine_grid.shape if window is None else (int(window.height), int(window.width))
        features = np.empty((shape[0] * shape[1], len(self.predictors)), dtype="float32")
        for column, name in enumerate(self.predictor_names):
            features[:, column] = self.read_fine(name, date_index, window).ravel()
        return features

    def coarse_features(self, date_index):
        """Feature matrix of the coarse grid: float32 (h*w, n_predictors), row-major cells."""
        import numpy as np

        h, w = self.coarse_grid.shape
        features = np.empty((h * w, len(self.predictors)), dtype="float32")
        for column, name in enumerate(self.predictor_names):
            features[:, column] = self.read_coarse(name, date_index).ravel()
        return features


class _GenerationChanged(Exception):
    """dataset.json changed while a dataset was being opened (another run replaced it)."""


def _read_manifest(folder):
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        raise SmdError(f"{folder!r} is not a prepared dataset (no {MANIFEST}); run the "
                       "preprocess step first.")
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError
        raise SmdError(f"{path}: cannot read the dataset manifest ({err}); run preprocess "
                       "again.") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SmdError(f"{path} is not a smdownscale dataset manifest.")
    if manifest.get("version") != VERSION:
        raise SmdError(f"{path}: dataset version {manifest.get('version')!r} is not supported "
                       f"(this plugin reads version {VERSION}); run preprocess again.")
    missing_keys = [k for k in ("dataset_id", "dates", "predictors", "fine_grid", "coarse_grid",
                                "min_valid_fraction", "mask_classes", "target") if k not in manifest]
    if missing_keys:
        raise SmdError(f"{path}: the manifest lacks {', '.join(missing_keys)}; run preprocess "
                       "again.")
    return manifest


def write_manifest(folder, *, dates, predictors, fine_grid, coarse_grid, min_valid_fraction,
                   mask_classes, extra=None):
    """Seal a dataset folder: give it a new identity and write ``dataset.json`` last.

    Every raster the manifest lists is tagged with the new ``dataset_id`` (GeoTIFF metadata, no
    pixel is rewritten), so :meth:`Dataset.open` can tell rasters of two preprocess runs apart.
    Used by preprocess inside its temporary folder, and by tests and the bench that assemble a
    dataset by hand.
    """
    from .outputs import tag_raster, write_text_output

    predictors = [Predictor.from_json(p) for p in predictors]  # Predictor records or their JSON
    manifest = {"format": FORMAT, "version": VERSION, "dataset_id": uuid.uuid4().hex,
                "dates": list(dates),
                "predictors": [p.to_json() for p in predictors], "fine_grid": fine_grid.to_json(),
                "coarse_grid": coarse_grid.to_json(),
                "min_valid_fraction": float(min_valid_fraction),
                "mask_classes": {k: list(v) for k, v in (mask_classes or {}).items()},
                "target": TARGET}
    if extra:
        manifest.update(extra)
    rasters = [coarse_path(folder, TARGET), coarse_path(folder, VALID_FRACTION)]
    for predictor in predictors:
        if not predictor.derived:
            rasters += [fine_path(folder, predictor.name), coarse_path(folder, predictor.name)]
    for path in rasters:
        if os.path.isfile(path):
            tag_raster(path, {DATASET_ID_TAG: manifest["dataset_id"]})
    write_text_output(os.path.join(folder, MANIFEST), json.dumps(manifest, indent=1))
    return manifest
