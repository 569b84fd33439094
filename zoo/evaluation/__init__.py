"""Evaluating a zoo model on labelled photos (``python -m zoo evaluate``), one concern a module:

- ``metrics``: every metric from raw outputs and targets (``compute_metrics``, scikit-learn);
- ``outputs``: the model's (and each ensemble member's) raw outputs over photos, in batches;
- ``figures``: the plotly ROC curves and confusion matrix;
- ``report``: one self-contained HTML page of figures and a summary table;
- ``cli``: the command line.
The photos and their targets in the model's labels come from ``fundus.datasets.labelled``.
"""
