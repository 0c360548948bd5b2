"""QGIS Processing integration: the ``smdownscale`` provider and its algorithms.

Importing this package is cheap: no learner (xgboost, lightgbm, catboost, shap, sklearn) and no
core raster code is imported until an algorithm runs.
"""
