"""Issue 9 (predict / validate / explain): each parameter is parsed in one place, in core, and the
Python API and the Processing dialogs accept and refuse exactly the same inputs.

Every case feeds the same value through core's public parser and through the algorithm's
parameter check (QGIS's own checks, then ``parameter_error``) and compares the outcome: both
accept it, or both refuse it with the same message.
"""
import math

import pytest

from smdownscale.core.common import SmdError

DATASET_DATES = ["2019-04-01", "2019-04-02", "2019-04-03"]


def _core(function, *args):
    """``("ok", result)`` or ``("refused", message)``."""
    try:
        return "ok", function(*args)
    except SmdError as err:
        return "refused", str(err)


def _shell(algorithm, parameters, context):
    """``("ok", None)`` or ``("refused", message)`` from the algorithm's full parameter check."""
    ok, message = algorithm.checkParameterValues(parameters, context)
    return ("ok", None) if ok else ("refused", message)


def _same(core, shell):
    assert core[0] == shell[0], (core, shell)
    if core[0] == "refused":
        assert shell[1] == core[1]


@pytest.fixture()
def inputs(tmp_path):
    """A folder that passes the dataset-folder check and a file that passes the model check."""
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "dataset.json").write_text("{}")
    model = tmp_path / "model.smdmodel.zip"
    model.write_bytes(b"")
    return str(dataset), str(model)


def _algorithm(cls):
    algorithm = cls()
    algorithm.initAlgorithm()
    return algorithm


# ------------------------------------------------------------------ predict: DATES, BLOCK_SIZE
DATES_CASES = ["2019-04-01;2019-04-02", " 2019-04-01 , ", "2019-04-02,2019-04-01,2019-04-02", "", "   ",
               ",", " ; , ", "first of May", "2019-13-01", "20190401", "2019-04-01,bad", "2030-01-01",
               "2019-04-01T06:00"]


@pytest.mark.parametrize("text", DATES_CASES)
def test_dates_checked_the_same_by_the_api_and_the_dialog(qgis_app, inputs, text):
    from qgis.core import QgsProcessingContext

    from smdownscale.core.predict import parse_dates
    from smdownscale.processing.algorithms.predict import PredictAlgorithm

    dataset, model = inputs
    shell = _shell(_algorithm(PredictAlgorithm), {"DATASET": dataset, "MODEL": model, "DATES": text,
                                                  "OUTPUT": "/tmp/x.tif"}, QgsProcessingContext())
    _same(_core(parse_dates, text), shell)


def test_dates_rules():
    from smdownscale.core.predict import parse_dates, select_dates

    assert parse_dates("2019-04-01;2019-04-02") == ["2019-04-01", "2019-04-02"]
    assert parse_dates(" 2019-04-01 , ") == ["2019-04-01"]
    assert parse_dates("2019-04-02,2019-04-01,2019-04-02") == ["2019-04-02", "2019-04-01"]
    assert parse_dates("") is parse_dates("  ") is parse_dates(None) is None
    assert select_dates(DATASET_DATES, " 2019-04-03 ;2019-04-01") == [2, 0]
    assert select_dates(DATASET_DATES, None) == [0, 1, 2]
    # drift fixed: the dialog accepted 20190401 (Python 3.11 fromisoformat), core refused it as
    # not a dataset date; now both refuse it as not YYYY-MM-DD
    for bad in ("20190401", "first of May", "2019-02-30"):
        with pytest.raises(SmdError, match="is not a date in the form YYYY-MM-DD"):
            parse_dates(bad)
    # drift fixed: the dialog took "," as "every date", core as an empty list
    with pytest.raises(SmdError, match="list of dates to predict is empty"):
        parse_dates(" ; , ")
    with pytest.raises(SmdError, match="list of dates to predict is empty"):
        parse_dates([])
    with pytest.raises(SmdError, match="2030-01-01 are not in the dataset. Available dates: 2019-04-01"):
        select_dates(DATASET_DATES, "2019-04-01,2030-01-01")


def test_predict_shell_passes_the_dates_text_to_core_and_reports_its_record(qgis_app, inputs, tmp_path,
                                                                            monkeypatch):
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback

    import smdownscale.core.predict as core_predict
    from smdownscale.processing.algorithms.predict import PredictAlgorithm

    seen = {}

    def fake_predict(dataset, model, output, *, dates, block_size, **kwargs):
        seen.update(dates=dates, block_size=block_size)
        chosen = [DATASET_DATES[i] for i in core_predict.select_dates(DATASET_DATES, dates)]
        return core_predict.PredictionReport(output=output, dates=chosen, pixels_predicted=7)

    monkeypatch.setattr(core_predict, "predict", fake_predict)
    dataset, model = inputs
    algorithm = _algorithm(PredictAlgorithm)
    result = algorithm.processAlgorithm(
        {"DATASET": dataset, "MODEL": model, "DATES": " 2019-04-02 ;2019-04-02, ", "BLOCK_SIZE": 64,
         "OUTPUT": str(tmp_path / "out.tif")}, QgsProcessingContext(), QgsProcessingFeedback())
    assert seen == {"dates": " 2019-04-02 ;2019-04-02, ", "block_size": 64.0}
    assert result["N_DATES"] == 1 and result["N_PIXELS"] == 7


def test_prediction_report_keeps_the_dict_keys():
    from smdownscale.core.predict import PredictionReport

    report = PredictionReport(output="/x.tif", dates=["2019-04-01"], pixels_predicted=3)
    assert list(report.to_dict()) == [
        "output", "dates", "pixels_predicted", "pixels_nan", "pixels_per_model",
        "pixels_outside_partitions", "pixels_without_model", "fallback_partitions",
        "partitions_without_model", "residual_correction", "max_cell_mismatch_before",
        "max_cell_mismatch_after", "cells_without_soil_moisture"]
    assert report["pixels_predicted"] == report.pixels_predicted == 3
    assert report["max_cell_mismatch_before"] is None
    with pytest.raises(KeyError):
        report["pixels"]


# ------------------------------------------------------------------ whole-number parameters
#: (algorithm, parameter, core parser, value, accepted). Drift fixed: BLOCK_SIZE was 16..8192 in
#: the dialog (core: >= 1), MAX_SAMPLES >= 10 (core: >= 1); the dialog rounded 2.5 and wrapped
#: 1e12 to 0 (parameterAsInt). Bug fixed: a negative SEED passed both and failed inside numpy.
WHOLE_NUMBER_CASES = (
    [("predict", "BLOCK_SIZE", "parse_block_size", v, ok) for v, ok in (
        ("1", True), ("8", True), ("512", True), ("10000", True), ("1e3", True), ("0", False),
        ("-4", False), ("2.5", False), ("abc", False))]
    + [("explain", "MAX_SAMPLES", "parse_max_samples", v, ok) for v, ok in (
        ("1", True), ("9", True), ("2000", True), ("1e12", True), ("0", False), ("-3", False),
        ("2.5", False), ("abc", False))]
    + [("explain", "SEED", "parse_seed", v, ok) for v, ok in (
        ("0", True), ("7", True), ("-1", False), ("2.5", False), ("abc", False))])


@pytest.mark.parametrize("alg_id, parameter, parser, value, accepted", WHOLE_NUMBER_CASES)
def test_whole_number_parameters_checked_the_same_by_the_api_and_the_dialog(qgis_app, inputs, alg_id, parameter,
                                                                             parser, value, accepted):
    import importlib

    from qgis.core import QgsProcessingContext

    core_module = importlib.import_module(f"smdownscale.core.{alg_id}")
    shell_module = importlib.import_module(f"smdownscale.processing.algorithms.{alg_id}")
    dataset, model = inputs
    core = _core(getattr(core_module, parser), value)
    shell = _shell(_algorithm(shell_module.ALGORITHMS[0]), {
        "DATASET": dataset, "MODEL": model, parameter: value, "OUTPUT": "/tmp/x.tif",
        "OUTPUT_TABLE": "memory:"}, QgsProcessingContext())
    assert core[0] == shell[0] == ("ok" if accepted else "refused"), (core, shell)
    if value == "2.5":  # refused by core's rule, not rounded by QGIS
        minimum = 0 if parameter == "SEED" else 1
        assert shell[1] == f"{parameter.lower()}=2.5: use a whole number of at least {minimum}."


def test_explain_table_columns_are_core_fields():
    from smdownscale.core.explain import FIELDS
    from smdownscale.processing.algorithms.explain import table_fields

    assert tuple(table_fields().names()) == FIELDS


# ------------------------------------------------------------------ validate: fields, report, classes
@pytest.fixture()
def station_layer(qgis_app):
    from qgis.core import QgsField, QgsVectorLayer
    from qgis.PyQt.QtCore import QVariant

    layer = QgsVectorLayer("Point?crs=EPSG:4326", "stations", "memory")
    layer.dataProvider().addAttributes([QgsField("site_id", QVariant.String), QgsField("date", QVariant.String),
                                        QgsField("sm", QVariant.Double), QgsField("theta", QVariant.Double)])
    layer.updateFields()
    return layer


FIELD_CASES = [("SITE_FIELD", ""), ("SITE_FIELD", "site_id"), ("SITE_FIELD", "SITE_ID"), ("VALUE_FIELD", "theta"),
               ("VALUE_FIELD", "moisture"), ("DATE_FIELD", "   "), ("DATE_FIELD", "Date")]


@pytest.mark.parametrize("parameter, field", FIELD_CASES)
def test_station_fields_checked_the_same_by_the_api_and_the_dialog(station_layer, parameter, field, tmp_path):
    from qgis.core import QgsProcessingContext

    from smdownscale.core.stations import read_stations, station_fields
    from smdownscale.processing.algorithms.validate import ValidateAlgorithm
    from smdownscale.processing.layers import observations_from_source

    keyword = {"SITE_FIELD": "site_field", "DATE_FIELD": "date_field", "VALUE_FIELD": "value_field"}[parameter]
    core = _core(lambda: station_fields(station_layer.fields().names(), **{keyword: field}))
    algorithm = _algorithm(ValidateAlgorithm)
    parameters = {"STATIONS": station_layer, parameter: field, "OUTPUT": "memory:"}
    error = algorithm.parameter_error(parameters, QgsProcessingContext())
    _same(core, ("ok", None) if error is None else ("refused", error))
    # the layer reader and the file reader follow the same rule
    try:
        observations_from_source(station_layer, **{"site_field": None, "date_field": None, "value_field": None,
                                                   keyword: field})
        layer_outcome = "ok"
    except Exception:  # noqa: BLE001 - QgsProcessingException
        layer_outcome = "refused"
    table = tmp_path / "stations.csv"
    table.write_text("site_id,date,sm,theta,lon,lat\nA,2019-04-01,0.2,0.2,10,50\n")
    file_outcome = _core(lambda: read_stations(str(table), **{keyword: field}))[0]
    assert layer_outcome == file_outcome == core[0]


@pytest.mark.parametrize("name", ["report.html", "report.HTM", "report.csv", "report.json", "report.txt",
                                  "report.xlsx"])
def test_report_extension_checked_the_same_by_the_api_and_the_dialog(station_layer, tmp_path, name):
    from qgis.core import QgsProcessingContext

    from smdownscale.core.validate import check_report_path
    from smdownscale.processing.algorithms.validate import ValidateAlgorithm

    path = str(tmp_path / name)
    error = _algorithm(ValidateAlgorithm).parameter_error(
        {"STATIONS": station_layer, "OUTPUT": "memory:", "OUTPUT_REPORT": path}, QgsProcessingContext())
    _same(_core(check_report_path, path), ("ok", None) if error is None else ("refused", error))


def test_validation_points_carry_core_per_site_fields():
    from smdownscale.core.metrics import METRIC_NAMES
    from smdownscale.core.validate import PER_SITE_FIELDS, SUMMARY_METRICS
    from smdownscale.processing.algorithms.validate import output_fields, point_attributes

    names = tuple(output_fields().names())
    assert names == tuple(f for f in PER_SITE_FIELDS if f not in ("x", "y"))
    assert names[-4:] == METRIC_NAMES == SUMMARY_METRICS
    row = {"product": "p", "site_id": 5, "x": 1.0, "y": 2.0, "n": 2, "r": math.nan, "rmse": 0.1,
           "bias": 0.0, "ubrmse": 0.05}
    assert point_attributes(row) == ["p", "5", 2, None, 0.1, 0.0, 0.05]


@pytest.mark.parametrize("value", [0.0, 0.0399, 0.04, 0.05, 0.06, 0.0601, 0.3])
def test_ubrmse_style_classes_follow_core(qgis_app, value):
    """Bug fixed: the style showed ubRMSE = 0.04 as "meets", the report counted it "acceptable"."""
    from qgis.core import QgsWkbTypes

    from smdownscale.core.metrics import ubrmse_classes
    from smdownscale.processing.layers import ubrmse_renderer

    counts = ubrmse_classes([value])
    expected = next(name for name, n in counts.items() if n)
    assert ubrmse_renderer(QgsWkbTypes.PointGeometry).rangeForValue(value).label().startswith(expected)
