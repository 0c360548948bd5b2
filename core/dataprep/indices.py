"""Spectral indices (paper Eq. 1-4) from surface-reflectance rasters such as MOD09A1.

Input convention: one multi-band reflectance raster per date (e.g. the 7 MOD09A1 bands). Give
one path, a list of paths, or a folder (all ``*.tif``/``*.tiff`` in it). Each file's date comes
from its ``DATE`` metadata tag or its file name (``..._YYYY-MM-DD.tif``, ``YYYYMMDD`` or MODIS
``AYYYYDDD``), see :mod:`.series_io`. A single file without any date gives undated (static)
single-band outputs. All files must share one grid.

Output: one series GeoTIFF per index, ``<index>.tif``, band i = date i (ascending), described by
its date, float32 with NaN nodata.
"""
import contextlib
import os

import numpy as np

from ..common import Progress, SmdError, gdal_cache_limit, series_profile
from ..grids import block_windows
from ..outputs import check_outputs
from .series_io import (grid_profile, open_raster, raster_date, read_masked,
                        require_same_grid)

#: MOD09A1 band numbers (1-based): red 1, nir 2, blue 3, green 4, swir1 6, swir2 7.
MOD09A1_BANDS = {"red": 1, "nir": 2, "blue": 3, "green": 4, "swir1": 6, "swir2": 7}

#: Bands each index needs.
INDEX_BANDS = {
    "ndvi": ("nir", "red"),
    "evi": ("nir", "red", "blue"),
    "ndwi": ("green", "nir"),
    "nsdsi": ("swir1", "swir2"),
}


def compute_index(name, bands):
    """One index from reflectance arrays (already scaled), NaN where undefined.

    Parameters
    ----------
    name : {"ndvi", "evi", "ndwi", "nsdsi"}
    bands : dict band name -> float array (any shape), NaN = nodata

    Returns
    -------
    float64 array of the same shape; NaN where an input is NaN or the denominator is 0
    (never +-inf).
    """
    b = bands
    if name == "ndvi":
        numerator, denominator = b["nir"] - b["red"], b["nir"] + b["red"]
    elif name == "evi":
        numerator = 2.5 * (b["nir"] - b["red"])
        denominator = b["nir"] + 6.0 * b["red"] - 7.5 * b["blue"] + 1.0
    elif name == "ndwi":
        numerator, denominator = b["green"] - b["nir"], b["green"] + b["nir"]
    elif name == "nsdsi":
        numerator, denominator = b["swir1"] - b["swir2"], b["swir1"]
    else:
        raise SmdError(f"Unknown index {name!r}; choose from {', '.join(INDEX_BANDS)}.")
    with np.errstate(divide="ignore", invalid="ignore"):
        result = numerator / denominator
    result[(denominator == 0) | ~np.isfinite(result)] = np.nan
    return result


def parse_band_map(text):
    """``"red:1,nir:2,blue:3,green:4,swir1:6,swir2:7"`` -> dict (1-based band numbers).

    Names not given keep their MOD09A1 default.
    """
    mapping = dict(MOD09A1_BANDS)
    if text is None or not str(text).strip():
        return mapping
    for item in str(text).split(","):
        if not item.strip():
            continue
        name, sep, number = item.partition(":")
        name = name.strip().lower()
        if not sep or name not in MOD09A1_BANDS:
            raise SmdError(f"Band map entry {item.strip()!r} is not 'name:band' with name one of "
                           f"{', '.join(MOD09A1_BANDS)} (e.g. 'red:1,nir:2').")
        try:
            mapping[name] = int(number.strip())
        except ValueError as err:
            raise SmdError(f"Band map entry {item.strip()!r}: the band must be a whole number.") from err
    return mapping


def _input_paths(reflectance_path):
    if isinstance(reflectance_path, (str, os.PathLike)):
        path = os.fspath(reflectance_path)
        if os.path.isdir(path):
            paths = sorted(os.path.join(path, f) for f in os.listdir(path)
                           if f.lower().endswith((".tif", ".tiff")) and not f.startswith("."))
            if not paths:
                raise SmdError(f"The folder {path!r} holds no .tif reflectance rasters.")
            return paths
        return [path]
    paths = [os.fspath(p) for p in reflectance_path]
    if not paths:
        raise SmdError("No reflectance raster given.")
    return paths


def _output_paths(output_folder_or_paths, indices):
    if isinstance(output_folder_or_paths, dict):
        missing = [name for name in indices if name not in output_folder_or_paths]
        if missing:
            raise SmdError(f"No output path given for {', '.join(missing)}.")
        return {name: os.fspath(output_folder_or_paths[name]) for name in indices}
    folder = os.fspath(output_folder_or_paths)
    if not os.path.isdir(folder):
        raise SmdError(f"The output folder {folder!r} does not exist; create it first.")
    return {name: os.path.join(folder, f"{name}.tif") for name in indices}


def spectral_indices(reflectance_path, output_folder_or_paths, *, indices=("ndvi", "evi", "ndwi", "nsdsi"),
                     band_map=None, scale_factor=0.0001, block_size=256, progress=None):
    """Compute NDVI, EVI, NDWI and NSDSI series from per-date reflectance rasters.

    NDVI = (nir-red)/(nir+red); EVI = 2.5(nir-red)/(nir+6red-7.5blue+1);
    NDWI = (green-nir)/(green+nir); NSDSI = (swir1-swir2)/swir1 (paper Eq. 1-4), on
    reflectance = stored value x ``scale_factor``. Input nodata and zero denominators give NaN.

    Parameters
    ----------
    reflectance_path : path, list of paths, or folder
        Multi-band reflectance raster(s), one per date (see the module docstring for dates).
    output_folder_or_paths : folder or dict index -> path
        A folder receives ``<index>.tif`` for each index.
    indices : sequence of {"ndvi", "evi", "ndwi", "nsdsi"}
    band_map : dict or str, optional
        Band numbers (1-based) of red, nir, blue, green, swir1, swir2; default MOD09A1
        (red 1, nir 2, blue 3, green 4, swir1 6, swir2 7). Missing names keep the default.
    scale_factor : float
        Multiplier from stored values to reflectance (MOD09A1: 0.0001).
    block_size : int
        Window size in pixels (memory: about block_size^2 x dates x indices x 4 bytes).
    progress : Progress, optional

    Returns
    -------
    dict index -> output path.
    """
    from ..outputs import CheckedRasterWriter, atomic_output

    progress = Progress.wrap(progress)
    indices = [str(name).strip().lower() for name in indices]
    unknown = [name for name in indices if name not in INDEX_BANDS]
    if not indices or unknown:
        raise SmdError(f"Unknown or no index {unknown or ''}; choose from {', '.join(INDEX_BANDS)}.")
    if len(set(indices)) != len(indices):
        raise SmdError("An index is listed twice.")
    if isinstance(band_map, dict):
        band_map = ",".join(f"{name}:{band}" for name, band in band_map.items())
    mapping = parse_band_map(band_map)
    try:
        scale_factor = float(scale_factor)
    except (TypeError, ValueError) as err:
        raise SmdError(f"scale_factor must be a number, got {scale_factor!r}.") from err
    if not np.isfinite(scale_factor) or scale_factor <= 0:
        raise SmdError(f"scale_factor must be a positive number, got {scale_factor!r}.")
    needed = sorted({band for name in indices for band in INDEX_BANDS[name]})

    paths = _input_paths(reflectance_path)
    outputs = _output_paths(output_folder_or_paths, indices)
    check_outputs([(out, "raster") for out in outputs.values()], inputs=paths)

    with contextlib.ExitStack() as stack:
        sources = []
        for path in paths:
            sources.append(stack.enter_context(open_raster(path, "reflectance raster")))
        grid = grid_profile(sources[0])
        for path, src in zip(paths[1:], sources[1:]):
            require_same_grid(grid, grid_profile(src), paths[0], path)
        for path, src in zip(paths, sources):
            too_high = [f"{name}={mapping[name]}" for name in needed if not 1 <= mapping[name] <= src.count]
            if too_high:
                raise SmdError(f"{path}: has {src.count} bands but the band map asks for "
                               f"{', '.join(too_high)}; fix the band map.")
        dates = [raster_date(src, path, required=len(paths) > 1) for path, src in zip(paths, sources)]
        if dates[0] is None:
            dates = None
        else:
            if len(set(dates)) != len(dates):
                raise SmdError("Two reflectance rasters have the same date: "
                               + ", ".join(sorted({d for d in dates if dates.count(d) > 1})) + ".")
            order = np.argsort(dates, kind="stable")
            sources = [sources[i] for i in order]
            dates = [dates[i] for i in order]

        # Two phases, so a failure leaves no output at all (not some indices written and others
        # not): every index is written and verified into its temporary first; only then are the
        # temporaries renamed into place.
        profile = series_profile(grid, len(sources))
        valid = {name: 0 for name in indices}
        with contextlib.ExitStack() as commits:
            commits.enter_context(gdal_cache_limit())
            temporaries = {name: commits.enter_context(atomic_output(outputs[name])) for name in indices}
            with contextlib.ExitStack() as files:
                writers = {name: files.enter_context(CheckedRasterWriter(temporaries[name], profile,
                                                                         final_path=outputs[name]))
                           for name in indices}
                if dates:
                    for writer in writers.values():
                        for band, date in enumerate(dates, start=1):
                            writer.set_band_description(band, date)
                windows = list(block_windows(grid["width"], grid["height"], block_size))
                band_numbers = [mapping[name] for name in needed]
                for done, window in enumerate(windows):
                    progress.check()
                    stacks = {name: np.empty((len(sources), window.height, window.width), "float32")
                              for name in indices}
                    for position, src in enumerate(sources):
                        data = read_masked(src, band_numbers, window) * scale_factor
                        bands = dict(zip(needed, data))
                        for name in indices:
                            stacks[name][position] = compute_index(name, bands)
                    for name in indices:
                        valid[name] += int(np.isfinite(stacks[name]).sum())
                        writers[name].write(stacks[name], window=window)
                    progress.update((done + 1) / len(windows), f"Spectral indices: block {done + 1}/{len(windows)}")
                empty = [name for name in indices if valid[name] == 0]
                if empty:
                    raise SmdError(
                        f"{', '.join(n.upper() for n in empty)} would hold no valid value: the bands "
                        f"{', '.join(f'{b} (band {mapping[b]})' for b in sorted({b for n in empty for b in INDEX_BANDS[n]}))} "
                        "are nodata everywhere or the denominator is zero everywhere. Check the band map, "
                        "the scale factor and the inputs' nodata value; nothing was written.")
    return outputs
