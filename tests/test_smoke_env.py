def test_qgis_and_learners_load_in_one_process(qgis_app):
    import catboost
    import lightgbm
    import xgboost
    from qgis.core import Qgis

    assert Qgis.QGIS_VERSION_INT >= 32200
    assert xgboost.__version__ and lightgbm.__version__ and catboost.__version__


def test_package_imports_as_smdownscale():
    from smdownscale.core.common import SmdError

    assert issubclass(SmdError, ValueError)
