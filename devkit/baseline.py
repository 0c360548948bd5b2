"""Reference comparisons: a bilinear-resampling baseline and pooled scores against a 1 km truth."""
import numpy as np
import rasterio
from rasterio.warp import Resampling, reproject

from ..core.common import Progress, SmdError, read_band_dates, write_series
from ..core.metrics import r as pearson_r
from ..core.metrics import rmse, ubrmse


def bilinear_baseline(soil_moisture_path, like_path, output_path, *, progress=None):
    """The coarse series resampled bilinearly (GDAL warp) onto the grid of ``like_path``.

    This is the naive "downscaling" every method has to beat: it adds no fine detail.
    Written one date at a time.
    """
    progress = Progress.wrap(progress)
    with rasterio.open(like_path) as like, rasterio.open(soil_moisture_path) as coarse:
        dates = read_band_dates(coarse)
        profile = {"crs": like.crs, "transform": like.transform, "width": like.width, "height": like.height}

        def bands():
            for band in range(1, coarse.count + 1):
                progress.update((band - 1) / coarse.count, dates[band - 1] if dates else None)
                fine = np.full((like.height, like.width), np.nan, "float32")
                reproject(coarse.read(band), fine, src_transform=coarse.transform, src_crs=coarse.crs,
                          src_nodata=coarse.nodata if coarse.nodata is not None else np.nan,
                          dst_transform=like.transform, dst_crs=like.crs, dst_nodata=np.nan,
                          resampling=Resampling.bilinear)
                yield fine

        write_series(output_path, bands(), dates, profile)
    return output_path


def pooled_scores(prediction_path, reference_path):
    """R, RMSE and ubRMSE over every pixel and date valid in both series (matched by date).

    Both rasters must share a grid; they are read one date at a time.
    """
    predictions, references = [], []
    with rasterio.open(prediction_path) as pred, rasterio.open(reference_path) as ref:
        if (pred.width, pred.height, pred.transform) != (ref.width, ref.height, ref.transform):
            raise SmdError(f"{prediction_path} and {reference_path} are not on the same grid.")
        reference_band = {date: k + 1 for k, date in enumerate(read_band_dates(ref))}
        for band, date in enumerate(read_band_dates(pred), start=1):
            if date in reference_band:
                predictions.append(pred.read(band).ravel())
                references.append(ref.read(reference_band[date]).ravel())
    if not predictions:
        raise SmdError(f"{prediction_path} and {reference_path} have no date in common.")
    predicted, observed = np.concatenate(predictions), np.concatenate(references)
    return {"r": pearson_r(predicted, observed), "rmse": rmse(predicted, observed),
            "ubrmse": ubrmse(predicted, observed), "n": int(np.sum(np.isfinite(predicted) & np.isfinite(observed)))}
