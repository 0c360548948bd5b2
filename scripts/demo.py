"""`make demo`: the whole pipeline on the built-in scenario, through qgis_process.

Writes everything under the output folder (default ``demo-output/``) and prints the
downscaled result's R and ubRMSE against the known 1 km truth next to a bilinear-resampling
baseline, plus the station validation of the downscaled, global (WP) and original SMAP series.

With ``--raw`` (`make demo-raw`, default folder ``demo-output-raw/``) the scenario is first
written as raw inputs (MOD09A1-like reflectance, Sentinel-1 scenes, MCD12Q1 PFT land cover,
SMAP L4 HDF5 granules; see devkit/raw_inputs.py) and the predictors and the 9 km series are
rebuilt from them with the Data preparation algorithms before the same chain runs.
"""
import argparse
import json
import os
import subprocess
import sys
import time


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QGIS_PROCESS = os.path.join(ROOT, "scripts", "qgis-process")


def run_algorithm(algorithm, **parameters):
    """Run one algorithm through qgis_process --json and return its outputs."""
    args = [QGIS_PROCESS, "run", f"smdownscale:{algorithm}", "--json", "--"]
    for name, value in parameters.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            args.append(f"{name}={item}")
    started = time.time()
    completed = subprocess.run(args, capture_output=True, text=True)
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout[-4000:] + completed.stderr[-4000:])
        raise SystemExit(f"smdownscale:{algorithm} failed (exit {completed.returncode})")
    text = completed.stdout
    result = json.loads(text[text.index("{"):])
    print(f"  smdownscale:{algorithm:<12} {time.time() - started:6.1f} s")
    for line in (result.get("log") or {}).get("info", []):
        if line.startswith("report written in"):  # the HTML report's share of that time
            print(f"    {line.split(':', 1)[0]}")
    return result["results"]


def prepare_from_raw(scenario, out):
    """The ``--raw`` path: write the scenario as raw inputs and rebuild the predictors from them.

    Runs importsmapl4, spectralindices, gapfill (each index: QC mask, 8-day -> daily,
    Savitzky-Golay), s1composite (VV, VH) and reclassifylc through qgis_process. Returns the
    predictor paths (derived + the scenario's already prepared ones) and the imported soil
    moisture series.
    """
    from smdownscale.core.dataprep.series_io import date_from_filename
    from smdownscale.devkit.raw_inputs import make_raw_inputs

    print(f"Writing the scenario's raw inputs to {out}/raw")
    raw = make_raw_inputs(scenario, os.path.join(out, "raw"))
    print(f"  {len(raw['reflectance'])} MOD09A1-like 8-day composites, {len(raw['s1_vv'])} Sentinel-1 "
          f"VV/VH scenes, MCD12Q1 LC_Type5, {len(raw['smap_granules'])} SMAP L4 granules")
    prepared = os.path.join(out, "prepared")
    predictors = os.path.join(prepared, "predictors")
    os.makedirs(predictors, exist_ok=True)

    print("Preparing the inputs through qgis_process:")
    # the 8-day indices are interpolated, never extrapolated: the study period is the span of
    # the composites, and only the granules of those days are imported
    first, last = raw["reflectance_dates"][0], raw["reflectance_dates"][-1]
    granules = [g for g in raw["smap_granules"] if first <= date_from_filename(g) <= last]
    soil_moisture = os.path.join(prepared, "smap_l4_sm_surface.tif")
    run_algorithm("importsmapl4", INPUT=granules, TIME_WINDOW=raw["smap_time_window"], OUTPUT=soil_moisture)
    indices_8day = os.path.join(prepared, "indices_8day")
    run_algorithm("spectralindices", INPUT=raw["reflectance"], OUTPUT=indices_8day)
    paths = []
    for name in ("ndvi", "evi", "ndwi", "nsdsi"):
        path = os.path.join(predictors, f"{name}.tif")
        run_algorithm("gapfill", INPUT=os.path.join(indices_8day, f"{name}.tif"), QC=raw["state_qa"],
                      QC_RULE=raw["qc_rule"], MAX_GAP_DAYS=15, DAILY=True, SG_HALF_WIDTH=5, SG_ORDER=4,
                      OUTPUT=path)
        paths.append(path)
    for name in ("vv", "vh"):
        path = os.path.join(predictors, f"{name}.tif")
        run_algorithm("s1composite", INPUT=raw[f"s1_{name}"], HALF_WINDOW=6, INPUT_DB=True, OUTPUT_DB=True,
                      START=first, END=last, OUTPUT=path)
        paths.append(path)
    path = os.path.join(predictors, "lc.tif")
    run_algorithm("reclassifylc", INPUT=raw["landcover"], WATER_AS_NODATA=False, OUTPUT=path)
    paths.append(path)
    return paths + list(raw["kept_predictors"]), soil_moisture


def synthetic_precipitation(soil_moisture, path):
    """A daily precipitation series on the soil-moisture grid for the validation report's time
    series (the scenario has none): rain where the 9 km soil moisture rises, 400 mm per m3/m3."""
    import numpy as np
    import rasterio

    from smdownscale.core.common import write_series

    with rasterio.open(soil_moisture) as src:
        values = src.read().astype("float64")
        dates = list(src.descriptions)
        grid = dict(crs=src.crs, transform=src.transform, width=src.width, height=src.height)
    rise = np.diff(values, axis=0, prepend=values[:1])
    rain = np.where(np.isfinite(rise), np.clip(rise, 0, None) * 400.0, 0.0)
    if os.path.exists(path):
        os.remove(path)
    return write_series(path, list(rain.astype("float32")), dates, grid)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output", nargs="?", default=None,
                        help="output folder (default demo-output, or demo-output-raw with --raw)")
    parser.add_argument("--size", default="demo", choices=["small", "demo"])
    parser.add_argument("--trees", type=int, default=300, help="boosting rounds per base model")
    parser.add_argument("--raw", action="store_true",
                        help="start from raw inputs (MOD09A1-like reflectance, Sentinel-1 scenes, MCD12Q1 "
                             "PFT land cover, SMAP L4 granules) and prepare them with the Data preparation "
                             "algorithms")
    args = parser.parse_args(argv)

    from smdownscale.demo.scenario import make_scenario

    out = os.path.abspath(args.output or ("demo-output-raw" if args.raw else "demo-output"))
    os.makedirs(out, exist_ok=True)
    print(f"Writing the built-in scenario to {out}/scenario")
    scenario = make_scenario(os.path.join(out, "scenario"), size=args.size)
    if args.raw:
        predictors, soil_moisture = prepare_from_raw(scenario, out)
    else:
        predictors, soil_moisture = scenario["predictors"], scenario["soil_moisture"]

    print("Running the pipeline through qgis_process:")
    dataset = os.path.join(out, "dataset")
    run_algorithm("preprocess", PREDICTORS=predictors, CATEGORICAL="lc", MASK_CLASSES="lc:0",
                  COARSE_SM=soil_moisture, FINE_RESOLUTION=1000, MIN_VALID_FRACTION=0.5,
                  OUTPUT=dataset)
    model = os.path.join(out, "model.smdmodel.zip")
    reports = {name: os.path.join(out, f"{name}_report.html")
               for name in ("training", "validation", "explanation", "period_maps")}
    run_algorithm("train", DATASET=dataset, PARTITIONS=scenario["partitions"], PARTITION_FIELD="name",
                  FOLDS=5, TEST_FRACTION=0.3, CV_STRATEGY=0, SEED=42, N_ESTIMATORS=args.trees,
                  MIN_SAMPLES=30 if args.size == "small" else 50, OUTPUT_MODEL=model,
                  OUTPUT_REPORT=reports["training"])
    downscaled = os.path.join(out, "downscaled_1km.tif")
    run_algorithm("predict", DATASET=dataset, MODEL=model, OUTPUT=downscaled)
    downscaled_global = os.path.join(out, "downscaled_1km_global.tif")
    run_algorithm("predict", DATASET=dataset, MODEL=model, GLOBAL_ONLY=True, OUTPUT=downscaled_global)
    precipitation = synthetic_precipitation(soil_moisture, os.path.join(out, "precipitation_9km.tif"))
    validation = run_algorithm(
        "validate", DOWNSCALED=downscaled, OTHER_PRODUCTS=[downscaled_global, soil_moisture],
        STATIONS=scenario["stations"], SITE_FIELD="site_id", DATE_FIELD="date", VALUE_FIELD="sm",
        PARTITIONS=scenario["partitions"], PARTITION_FIELD="name", PRECIPITATION=precipitation,
        OUTPUT=os.path.join(out, "validation.gpkg"), OUTPUT_REPORT=reports["validation"])
    run_algorithm("explain", MODEL=model, DATASET=dataset, OUTPUT_TABLE=os.path.join(out, "shap_importance.csv"),
                  OUTPUT_REPORT=reports["explanation"])
    run_algorithm("summarize", INPUT=downscaled, OUTPUT_MEAN=os.path.join(out, "period_mean.tif"),
                  OUTPUT_STD=os.path.join(out, "period_std.tif"), OUTPUT_COUNT=os.path.join(out, "period_count.tif"),
                  OUTPUT_REPORT=reports["period_maps"])

    from smdownscale.devkit.baseline import bilinear_baseline, pooled_scores

    baseline = bilinear_baseline(soil_moisture, scenario["truth"], os.path.join(out, "bilinear_1km.tif"))
    print("\nAgainst the known 1 km truth (all land pixels and dates):")
    print(f"  {'product':<28}{'R':>8}{'ubRMSE':>10}")
    for label, path in (("downscaled (partitioned)", downscaled), ("downscaled (global, WP)", downscaled_global),
                        ("bilinear resampling", baseline)):
        scores = pooled_scores(path, scenario["truth"])
        r_value, ubrmse_value = scores["r"], scores["ubrmse"]
        print(f"  {label:<28}{r_value:8.3f}{ubrmse_value:10.4f}")
    print("\nAgainst the stations (downscaled product):")
    for key in ("MEAN_R", "MEDIAN_R", "MEAN_UBRMSE", "MEAN_BIAS"):
        value = validation.get(key)
        print(f"  {key:<12}{value:.4f}" if value is not None else f"  {key:<12}undefined")
    print("\nReports (open in a web browser or from the Processing Results Viewer):")
    for name, path in reports.items():
        print(f"  {name:<12} {path}")
    print(f"\nOutputs in {out}")


if __name__ == "__main__":
    main()
