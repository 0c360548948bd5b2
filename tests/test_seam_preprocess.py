"""Issue 9: the Python API and the Processing algorithm accept and refuse the same preprocess inputs.

Every case feeds the same strings to ``core.preprocess.preprocess`` and to
``processing.run("smdownscale:preprocess")`` and compares the outcome: the same dataset options
(categorical predictors, mask classes, minimum valid fraction, fine grid) or the same refusal,
with the core's message. Each option is parsed in one place (``core.preprocess.check_options``).
"""
import json
import os

import numpy as np
import pytest
from affine import Affine

from smdownscale.core.common import SmdError
from smdownscale.core.dataset import Dataset, Predictor
from smdownscale.core.preprocess import (DEFAULT_CATEGORICAL, DEFAULT_MIN_VALID_FRACTION, check_options,
                                         parse_categorical, preprocess)

from test_preprocess import UTM, write_raster
from test_processing import processing_module  # noqa: F401 - the fixture, shared

DATES = ["2019-04-01", "2019-04-02"]
FINE = Affine(1000, 0, 400000, 0, -1000, 3006000)

#: API keyword -> Processing parameter
PARAMETERS = {"categorical": "CATEGORICAL", "mask_classes": "MASK_CLASSES",
              "min_valid_fraction": "MIN_VALID_FRACTION", "fine_resolution": "FINE_RESOLUTION",
              "target_crs": "TARGET_CRS"}


def _write(path, bands, *, crs=UTM, **kwargs):
    return write_raster(path, bands, crs, kwargs.pop("transform", FINE), **kwargs)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seam_inputs")
    ndvi = np.arange(36, dtype="float32").reshape(6, 6)
    lc = np.array([[1, 1, 2, 4, 4, 4], [1, 2, 2, 4, 2, 2], [1, 3, 3, 0, 0, 0],
                   [2, 2, 2, 0, 0, 0], [2, 2, 5, 0, 0, 0], [3, 3, 3, 1, 1, 1]])
    paths = {
        "ndvi": _write(folder / "ndvi.tif", [ndvi, ndvi * 2], dates=DATES),
        "lc": _write(folder / "lc.tif", [lc], nodata=255, dtype="uint8"),
        "soil": _write(folder / "soil.tif", [lc % 3 + 1], dtype="uint8"),
        "elev": _write(folder / "elev.tif", [ndvi + 100]),
        "bare": _write(folder / "bare.tif", [ndvi], crs=None),
        "sm": _write(folder / "sm.tif", [[[0.1, 0.2], [0.3, 0.4]], [[0.2, 0.3], [0.4, 0.5]]],
                     transform=Affine(3000, 0, 400000, 0, -3000, 3006000), dates=DATES),
    }
    return paths


def _summary(folder):
    with Dataset.open(folder) as dataset:
        return {"categorical": dataset.categorical_names, "mask_classes": dataset.mask_classes,
                "min_valid_fraction": dataset.min_valid_fraction,
                "fine_grid": (tuple(dataset.fine_grid.transform)[:6], dataset.fine_grid.shape,
                              dataset.fine_grid.crs.to_epsg())}


def _api(inputs, predictors, tmp_path, options):
    out = str(tmp_path / "api")
    try:
        preprocess([inputs[name] for name in predictors], inputs["sm"], out, **options)
    except SmdError as err:
        return "refused", str(err)
    return "accepted", _summary(out)


def _processing(processing_module, inputs, predictors, tmp_path, options):
    from qgis.core import QgsProcessingException

    out = str(tmp_path / "processing")
    parameters = {"PREDICTORS": [inputs[name] for name in predictors], "COARSE_SM": inputs["sm"],
                  "OUTPUT": out}
    parameters.update({PARAMETERS[key]: value for key, value in options.items()})
    try:
        processing_module.run("smdownscale:preprocess", parameters)
    except QgsProcessingException as err:
        return "refused", str(err)
    return "accepted", _summary(out)


def _same(processing_module, inputs, tmp_path, predictors, **options):
    """Both sides' outcome; asserts they agree (same options written, or the core's message)."""
    api = _api(inputs, predictors, tmp_path, options)
    qgis = _processing(processing_module, inputs, predictors, tmp_path, options)
    assert api[0] == qgis[0], (api, qgis)
    if api[0] == "accepted":
        assert api[1] == qgis[1]
    return api


def _refused_alike(processing_module, inputs, tmp_path, predictors, expected, *, same_message=True,
                   **options):
    """Both sides refuse; the API message holds ``expected`` and (``same_message``) Processing's
    message is the core's. Returns (API message, Processing message)."""
    outcome, api_message = _api(inputs, predictors, tmp_path, options)
    assert outcome == "refused" and expected in api_message, api_message
    outcome, qgis_message = _processing(processing_module, inputs, predictors, tmp_path, options)
    assert outcome == "refused" and (api_message if same_message else expected) in qgis_message, qgis_message
    return api_message, qgis_message


# -- CATEGORICAL ----------------------------------------------------------------------------------
# drift fixed: the shell split on "," only, so "lc;soil" was refused by the dialog ("lc;soil" is not
# a predictor) and accepted by the API

@pytest.mark.parametrize("text", ["lc;soil", "lc, soil", " lc ; soil ,", "soil,lc"])
def test_categorical_separators_agree(processing_module, inputs, tmp_path, text):
    outcome, summary = _same(processing_module, inputs, tmp_path, ["ndvi", "lc", "soil"], categorical=text)
    assert outcome == "accepted" and summary["categorical"] == ["lc", "soil"]


def test_empty_categorical_means_none_on_both_sides(processing_module, inputs, tmp_path):
    outcome, summary = _same(processing_module, inputs, tmp_path, ["ndvi", "lc"], categorical="")
    assert outcome == "accepted" and summary["categorical"] == []


# drift fixed: with the default CATEGORICAL ("lc") and no lc predictor the dialog refused the run
# ("Categorical predictor(s) lc are not among the predictors"); the API ignores the default
def test_default_categorical_without_lc_is_ignored_on_both_sides(processing_module, inputs, tmp_path):
    outcome, summary = _same(processing_module, inputs, tmp_path, ["ndvi", "elev"])
    assert outcome == "accepted" and summary["categorical"] == []
    outcome, summary = _same(processing_module, inputs, tmp_path, ["ndvi", "elev"], categorical="lc")
    assert outcome == "accepted" and summary["categorical"] == []


def test_default_categorical_with_lc(processing_module, inputs, tmp_path):
    outcome, summary = _same(processing_module, inputs, tmp_path, ["ndvi", "lc"])
    assert outcome == "accepted" and summary["categorical"] == ["lc"]


def test_unknown_categorical_is_refused_with_the_core_message(processing_module, inputs, tmp_path):
    message = "Categorical predictor(s) landcover not among the predictors (ndvi, lc)."
    api_message, qgis_message = _refused_alike(processing_module, inputs, tmp_path, ["ndvi", "lc"], message,
                                               categorical="lc;landcover")
    assert api_message == message and qgis_message.endswith("\n" + message)


def test_parse_categorical():
    assert parse_categorical("lc;soil") == parse_categorical("lc, soil") == ("lc", "soil")
    assert parse_categorical("") == parse_categorical(None) == parse_categorical(" ; , ") == ()
    assert parse_categorical(["lc", " soil "]) == ("lc", "soil")
    assert check_options(["ndvi"]).categorical == ()  # the default lc, absent: dropped
    assert DEFAULT_CATEGORICAL == ("lc",)


# -- MASK_CLASSES -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("lc:0", {"lc": [0]}),
    ("lc:0,5; soil:3", {"lc": [0, 5], "soil": [3]}),
    ("lc: 0 , 4 ;", {"lc": [0, 4]}),
    ("", {}),
    ("  ", {}),
])
def test_mask_classes_accepted_alike(processing_module, inputs, tmp_path, text, expected):
    outcome, summary = _same(processing_module, inputs, tmp_path, ["ndvi", "lc", "soil"], mask_classes=text)
    assert outcome == "accepted" and summary["mask_classes"] == expected


@pytest.mark.parametrize("text, message", [
    ("lc=0", "is not of the form name:class,class"),
    ("lc:water", "is not a number"),
    ("lc:", "list no class value"),
    ("water:0", "Mask classes name water, which is not a predictor (ndvi, lc, soil)."),
    ("ndvi:0", "can only be applied to static (single-band) predictors"),
])
def test_mask_classes_refused_alike_with_the_core_message(processing_module, inputs, tmp_path, text, message):
    _refused_alike(processing_module, inputs, tmp_path, ["ndvi", "lc", "soil"], message, mask_classes=text)


# -- MIN_VALID_FRACTION and FINE_RESOLUTION ------------------------------------------------------

@pytest.mark.parametrize("fraction", [0.0, 0.25, 1.0])
def test_min_valid_fraction_bounds_accepted(processing_module, inputs, tmp_path, fraction):
    outcome, summary = _same(processing_module, inputs, tmp_path, ["ndvi", "lc"], min_valid_fraction=fraction)
    assert outcome == "accepted" and summary["min_valid_fraction"] == fraction


# drift fixed: the dialog refused these with QGIS's own range message, the API with its own; now
# one rule (core.preprocess.parse_min_valid_fraction) and one message
@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_min_valid_fraction_out_of_range_refused_alike(processing_module, inputs, tmp_path, fraction):
    _refused_alike(processing_module, inputs, tmp_path, ["ndvi", "lc"],
                   "minimum valid fraction must be between 0 and 1", min_valid_fraction=fraction)


def test_default_min_valid_fraction_is_core_s(processing_module, inputs, tmp_path):
    outcome, summary = _same(processing_module, inputs, tmp_path, ["ndvi", "lc"])
    assert summary["min_valid_fraction"] == DEFAULT_MIN_VALID_FRACTION


@pytest.mark.parametrize("resolution", [0.0, -1000.0])
def test_non_positive_fine_resolution_refused_alike(processing_module, inputs, tmp_path, resolution):
    _refused_alike(processing_module, inputs, tmp_path, ["ndvi", "lc"],
                   "fine resolution must be a positive number", fine_resolution=resolution)


# -- CRS ----------------------------------------------------------------------------------------

def test_target_crs_alike(processing_module, inputs, tmp_path):
    outcome, summary = _same(processing_module, inputs, tmp_path, ["ndvi", "lc"], target_crs="EPSG:32650",
                             fine_resolution=2000.0)
    assert outcome == "accepted" and summary["fine_grid"][2] == 32650 and summary["fine_grid"][1] == (3, 3)


def test_a_raster_without_crs_is_refused_alike(processing_module, inputs, tmp_path):
    # the shell's own check (processing/layers.raster_path) words it differently
    api_message, _ = _refused_alike(processing_module, inputs, tmp_path, ["ndvi", "bare"],
                                    "has no coordinate reference system", same_message=False)
    assert "bare.tif has no coordinate reference system" in api_message


# -- the predictor record -------------------------------------------------------------------------

def test_predictor_record_keeps_the_manifest_shape(inputs, tmp_path):
    out = str(tmp_path / "ds")
    dataset = preprocess([inputs["ndvi"], inputs["lc"]], inputs["sm"], out)
    with open(os.path.join(out, "dataset.json"), encoding="utf-8") as handle:
        entries = json.load(handle)["predictors"]
    assert entries == [
        {"name": "ndvi", "kind": "continuous", "dynamic": True, "source": "ndvi.tif"},
        {"name": "lc", "kind": "categorical", "dynamic": False, "source": "lc.tif",
         "categories": [0, 1, 2, 3, 4, 5]},
        {"name": "doy", "kind": "continuous", "dynamic": True, "derived": True}]
    assert [p.to_json() for p in dataset.predictors] == entries
    assert [list(p.to_json()) for p in dataset.predictors] == [list(e) for e in entries]  # key order
    assert dataset.predictor("lc") == Predictor("lc", "categorical", False, (0, 1, 2, 3, 4, 5), source="lc.tif")
    assert all(Predictor.from_json(e).to_json() == e for e in entries)
    dataset.close()


@pytest.mark.parametrize("entry", [{"name": "x", "kind": "nominal", "dynamic": True},
                                   {"name": "x", "dynamic": True}, {"name": "", "kind": "continuous",
                                                                    "dynamic": False},
                                   {"name": "x", "kind": "categorical", "dynamic": "yes"}])
def test_predictor_record_refuses_bad_entries(entry):
    with pytest.raises(SmdError):
        Predictor.from_json(entry)
