"""Registry of the Processing algorithms of the ``smdownscale`` provider.

How to add an algorithm
-----------------------
1. Write ``processing/algorithms/<module>.py`` with one or more subclasses of
   :class:`.base.SmdAlgorithm` and a module-level list ``ALGORITHMS = [MyAlgorithm, ...]``.
2. Add ``"<module>"`` to :data:`ALGORITHM_MODULES` below.

Keep module-level imports light (``qgis.core`` and ``.base`` only); import ``..core`` functions
and learners inside ``processAlgorithm`` so that QGIS start-up stays fast.

A module listed here that cannot be imported does not stop the provider from loading the other
algorithms: the error is logged to the QGIS message log and returned by
:func:`algorithm_classes` in ``errors`` (the tests assert that list is empty).
"""
import importlib

#: Modules (in this package) whose ``ALGORITHMS`` lists are registered, in Toolbox order.
ALGORITHM_MODULES = (
    # "Downscaling" group (issue 4)
    "preprocess",
    "train",
    "predict",
    "explain",
    # model-file signing (issue 8)
    "generatekeys",
    "signmodel",
    # "Validation" group (issue 4)
    "validate",
    # "Data preparation" group (issue 5): one module per algorithm, named like its id
    "importsmapl4",
    "importismn",
    "spectralindices",
    "gapfill",
    "s1composite",
    "reclassifylc",
)


def algorithm_classes(modules=ALGORITHM_MODULES):
    """Import the algorithm modules and collect their classes.

    Returns
    -------
    classes : list of type
        Every class in the ``ALGORITHMS`` lists, in module order.
    errors : dict
        Module name -> error text for modules that failed to import or lack ``ALGORITHMS``.
    """
    classes, errors = [], {}
    for name in modules:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
            classes.extend(module.ALGORITHMS)
        except Exception as err:  # noqa: BLE001 - one broken module must not hide the others
            errors[name] = f"{type(err).__name__}: {err}"
    return classes, errors
