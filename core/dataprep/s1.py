"""Sentinel-1 backscatter scenes -> a daily series by a sliding-window mean (paper Section 2.2.4).

Each output day is the mean of all scenes acquired within +/- ``half_window_days`` of it (the
paper's 12-day window: 6 days before and after). The mean is taken in linear power, per pixel,
over the scenes that have a value there.

Inputs: single-band rasters (one scene each; date from the ``DATE`` tag, a band description
``YYYY-MM-DD`` or the file name, see :mod:`.series_io`) and/or multi-band series whose bands are
described by date (each band one scene). Units are not guessed: ``input_db=True`` (the default,
as GEE's ``COPERNICUS/S1_GRD``) means the values are dB; ``False`` means linear power, and a
negative value then stops the run with a hint that the data look like dB.

Grid: the output is on the grid of the first input. Scenes on another grid are warped onto it
on the fly (GDAL warp through ``rasterio.vrt.WarpedVRT``, bilinear, applied to the values as
stored, i.e. dB when ``input_db``); give scenes on one grid to avoid any resampling.
"""
import contextlib
import os

import numpy as np

from ..common import Progress, SmdError, parse_date, read_band_dates
from ..grids import block_windows
from ..outputs import check_outputs
from .series_io import (dates_from_numbers, grid_profile, open_series_writer,
                        open_raster, raster_date, read_masked, same_grid)

PIXEL_CHUNK = 16384


def db_to_linear(values):
    """10^(dB/10); NaN stays NaN."""
    return np.power(10.0, np.asarray(values, dtype="float64") / 10.0)


def linear_to_db(values):
    """10 log10(power); zero, negative or NaN power -> NaN."""
    values = np.asarray(values, dtype="float64")
    result = np.full(values.shape, np.nan)
    positive = np.isfinite(values) & (values > 0)
    result[positive] = 10.0 * np.log10(values[positive])
    return result


def _scene_paths(scene_paths):
    if isinstance(scene_paths, (str, os.PathLike)):
        path = os.fspath(scene_paths)
        if os.path.isdir(path):
            return sorted(os.path.join(path, f) for f in os.listdir(path)
                          if f.lower().endswith((".tif", ".tiff")) and not f.startswith("."))
        return [path]
    return [os.fspath(p) for p in scene_paths]


def window_weights(scene_days, output_days, half_window_days):
    """(n_days, n_scenes) 0/1 matrix: scene s counts for day d when |d - s| <= half window."""
    return (np.abs(np.asarray(output_days)[:, None] - np.asarray(scene_days)[None, :])
            <= half_window_days).astype("float64")


def s1_composite(scene_paths, output_path, *, half_window_days=6, input_db=True, output_db=True,
                 start=None, end=None, block_size=256, progress=None):
    """Daily Sentinel-1 series: each day the linear-power mean of the scenes within +/- a half window.

    Parameters
    ----------
    scene_paths : list of paths, or a folder of .tif
        VV or VH scenes (one polarisation per call); see the module docstring for dates and grids.
    output_path : path
        GeoTIFF series, one band per day described ``YYYY-MM-DD``, float32, NaN nodata.
    half_window_days : int
        Scenes within this many days before or after a day are averaged (paper: 6).
    input_db : bool
        Inputs are in dB (True) or linear power (False).
    output_db : bool
        Write dB (True) or linear power (False).
    start, end : ISO date, optional
        First and last day written; default the first and last scene dates.
    block_size : int
        Spatial window in pixels (all scenes of one window are held in memory).
    progress : Progress, optional

    Returns
    -------
    dict: ``dates`` written, ``scenes`` (number used), ``days_without_scene`` (dates with no
    scene in their window; NaN everywhere).
    """
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    progress = Progress.wrap(progress)
    try:
        half_window_days = int(half_window_days)
    except (TypeError, ValueError) as err:
        raise SmdError(f"half_window_days must be a whole number of days, got {half_window_days!r}.") from err
    if half_window_days < 0:
        raise SmdError(f"half_window_days must be 0 or more, got {half_window_days}.")
    paths = _scene_paths(scene_paths)
    if not paths:
        raise SmdError("No Sentinel-1 scene given.")
    check_outputs([(output_path, "raster")], inputs=paths)

    with contextlib.ExitStack() as stack:
        readers, scenes = [], []   # scenes: (day ordinal, reader index, band)
        grid = None
        for path in paths:
            src = stack.enter_context(open_raster(path, "Sentinel-1 scene"))
            if grid is None:
                grid = grid_profile(src)
            elif not same_grid(grid, grid_profile(src)):
                if src.crs is None or grid["crs"] is None:
                    raise SmdError(f"{path} is on another grid than {paths[0]} and one of them has no "
                                   "CRS, so it cannot be warped; assign the CRS first.")
                src = stack.enter_context(WarpedVRT(
                    src, crs=grid["crs"], transform=grid["transform"], width=grid["width"],
                    height=grid["height"], resampling=Resampling.bilinear, dtype="float32", nodata=np.nan))
            dates = read_band_dates(src) if src.count > 1 else [raster_date(src, path)]
            readers.append(src)
            scenes.extend((parse_date(d).toordinal(), len(readers) - 1, band)
                          for band, d in enumerate(dates, start=1))
        scene_days = np.array([s[0] for s in scenes], dtype="int64")
        first = parse_date(start).toordinal() if start else int(scene_days.min())
        last = parse_date(end).toordinal() if end else int(scene_days.max())
        if last < first:
            raise SmdError(f"The end date {dates_from_numbers([last])[0]} is before the start date "
                           f"{dates_from_numbers([first])[0]}.")
        days = np.arange(first, last + 1, dtype="int64")
        weights = window_weights(scene_days, days, half_window_days)
        used = np.flatnonzero(weights.any(axis=0))
        if used.size == 0:
            raise SmdError("No scene falls within the requested days (+/- the half window); "
                           "check start/end and the scene dates.")
        weights = weights[:, used]
        scenes = [scenes[i] for i in used]
        out_dates = dates_from_numbers(days)

        windows = list(block_windows(grid["width"], grid["height"], block_size))
        valid_values = 0
        with open_series_writer(output_path, grid, len(days), out_dates) as dst:
            for done, window in enumerate(windows):
                progress.check()
                n_pixels = window.width * window.height
                power = np.empty((len(scenes), n_pixels))
                for position, (_, reader_index, band) in enumerate(scenes):
                    values = read_masked(readers[reader_index], band, window).ravel()
                    if input_db:
                        power[position] = db_to_linear(values)
                    else:
                        if np.any(values < 0):
                            raise SmdError(f"{readers[reader_index].name} band {band} has negative "
                                           "values, impossible for linear power: the scenes look like "
                                           "dB; set input_db=True.")
                        power[position] = values
                result = np.empty((len(days), n_pixels), dtype="float32")
                for begin in range(0, n_pixels, PIXEL_CHUNK):
                    chunk = power[:, begin:begin + PIXEL_CHUNK]
                    valid = np.isfinite(chunk)
                    total = weights @ np.where(valid, chunk, 0.0)
                    count = weights @ valid.astype("float64")
                    mean = np.divide(total, count, out=np.full_like(total, np.nan), where=count > 0)
                    result[:, begin:begin + PIXEL_CHUNK] = linear_to_db(mean) if output_db else mean
                valid_values += int(np.isfinite(result).sum())
                dst.write(result.reshape(len(days), window.height, window.width), window=window)
                progress.update((done + 1) / len(windows), f"Sentinel-1 composite: block {done + 1}/{len(windows)}")
            if valid_values == 0:
                raise SmdError(
                    f"The {len(scenes)} Sentinel-1 scene(s) hold no valid value on the output grid (all "
                    "nodata, or no overlap with the first scene's grid"
                    + (", or zero/negative power" if output_db else "") + "); the output would be "
                    "empty. Check the scenes and their nodata value.")
    empty = [out_dates[i] for i in np.flatnonzero(~weights.any(axis=1))]
    return {"dates": out_dates, "scenes": len(scenes), "days_without_scene": empty}
