"""The evaluation's old home, kept while ``train/report.py`` and ``train/recipes/rfmid_ensemble.py`` still import
from it: the evaluation lives in ``zoo.evaluation`` (metrics, outputs, figures, report, cli)."""
from zoo.evaluation.figures import confusion_figure, roc_figure  # noqa: F401
from zoo.evaluation.metrics import compute_metrics  # noqa: F401
from zoo.evaluation.report import write_html  # noqa: F401
