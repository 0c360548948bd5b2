"""Registry of the Processing algorithms of the ``smdownscale`` provider.

How to add an algorithm
-----------------------
1. Write ``processing/algorithms/<module>.py`` with a subclass of :class:`.base.SmdAlgorithm`.
2. Add a loader below that imports it, and list the loader in :data:`LOADERS`.

Each loader imports its module explicitly, so readers and tools can follow provider ->
algorithm; one loader per module, so a module that cannot be imported (a broken optional
dependency) does not stop the provider from loading the others: the error is logged to the
QGIS message log and returned by :func:`algorithm_classes` in ``errors`` (the tests assert that
list is empty). Keep module-level imports light (``qgis.core`` and ``.base``); import ``..core``
functions and learners inside ``processAlgorithm`` so that QGIS start-up stays fast.
"""


def _preprocess():
    from .preprocess import PreprocessAlgorithm
    return [PreprocessAlgorithm]


def _train():
    from .train import TrainAlgorithm
    return [TrainAlgorithm]


def _predict():
    from .predict import PredictAlgorithm
    return [PredictAlgorithm]


def _explain():
    from .explain import ExplainAlgorithm
    return [ExplainAlgorithm]


def _summarize():
    from .summarize import SummarizeAlgorithm
    return [SummarizeAlgorithm]


def _generatekeys():
    from .generatekeys import GenerateKeysAlgorithm
    return [GenerateKeysAlgorithm]


def _signmodel():
    from .signmodel import SignModelAlgorithm
    return [SignModelAlgorithm]


def _validate():
    from .validate import ValidateAlgorithm
    return [ValidateAlgorithm]


def _importsmapl4():
    from .importsmapl4 import ImportSmapL4Algorithm
    return [ImportSmapL4Algorithm]


def _importismn():
    from .importismn import ImportIsmnAlgorithm
    return [ImportIsmnAlgorithm]


def _spectralindices():
    from .spectralindices import SpectralIndicesAlgorithm
    return [SpectralIndicesAlgorithm]


def _gapfill():
    from .gapfill import GapFillAlgorithm
    return [GapFillAlgorithm]


def _s1composite():
    from .s1composite import S1CompositeAlgorithm
    return [S1CompositeAlgorithm]


def _reclassifylc():
    from .reclassifylc import ReclassifyLandCoverAlgorithm
    return [ReclassifyLandCoverAlgorithm]


#: (module name, loader), in Toolbox order: downscaling, validation, data preparation
LOADERS = (
    ("preprocess", _preprocess), ("train", _train), ("predict", _predict), ("explain", _explain),
    ("summarize", _summarize), ("generatekeys", _generatekeys), ("signmodel", _signmodel),
    ("validate", _validate),
    ("importsmapl4", _importsmapl4), ("importismn", _importismn),
    ("spectralindices", _spectralindices), ("gapfill", _gapfill), ("s1composite", _s1composite),
    ("reclassifylc", _reclassifylc),
)
ALGORITHM_MODULES = tuple(name for name, _ in LOADERS)


def algorithm_classes(loaders=LOADERS):
    """Import the algorithm modules and collect their classes.

    Returns
    -------
    classes : list of type
        The algorithm classes, in :data:`LOADERS` order.
    errors : dict
        Module name -> error text for modules that failed to import.
    """
    classes, errors = [], {}
    for name, load in loaders:
        try:
            classes.extend(load())
        except Exception as err:  # noqa: BLE001 - one broken module must not hide the others
            errors[name] = f"{type(err).__name__}: {err}"
    return classes, errors
