"""The evaluation's plotly figures: ROC curves per class and the confusion matrix."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from fundus.tasks import MULTILABEL, task_of


def roc_figure(task: str, outputs: np.ndarray, targets: np.ndarray, labels: Sequence[str]):
    """Plotly figure: one ROC curve per class (one-vs-rest for multiclass; none for a grade regression)."""
    import plotly.graph_objects as go

    task = task_of(task)
    out, tgt = np.asarray(outputs, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dash", color="grey"),
                             name="chance", showlegend=False))
    if task.regression or len(out) == 0:
        fig.update_layout(title="ROC per class (not applicable)")
        return fig
    probs = task.probabilities(out)
    for k, name in enumerate(labels):
        if task is MULTILABEL:
            known = np.isfinite(tgt[:, k])
            y, s = tgt[known, k].astype(int), probs[known, k]
        else:
            y, s = (tgt.reshape(-1).astype(int) == k).astype(int), probs[:, k]
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{name} (AUC {roc_auc_score(y, s):.3f})"))
    fig.update_layout(title="ROC per class", xaxis_title="1 - specificity", yaxis_title="sensitivity",
                      xaxis=dict(range=[0, 1]), yaxis=dict(range=[0, 1.02]))
    return fig


def confusion_figure(metrics: dict[str, Any]):
    """Plotly heatmap of the confusion matrix (multilabel: one 2×2 row per label, as TN FP FN TP)."""
    import plotly.graph_objects as go

    labels = metrics.get("labels", [])
    cm = metrics.get("confusion_matrix")
    if isinstance(cm, dict):
        z = [sum(cm[name], []) for name in labels]
        fig = go.Figure(go.Heatmap(z=z, x=["TN", "FP", "FN", "TP"], y=labels, text=z, texttemplate="%{text}",
                                   colorscale="Blues"))
        fig.update_layout(title="Per-label confusion counts")
    else:
        fig = go.Figure(go.Heatmap(z=cm or [[0]], x=labels, y=labels, text=cm, texttemplate="%{text}",
                                   colorscale="Blues"))
        fig.update_layout(title="Confusion matrix", xaxis_title="predicted", yaxis_title="true",
                          yaxis=dict(autorange="reversed"))
    return fig
