"""The classification chart (plotly): class probabilities with their decision rule marked."""
from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

PREDICTED_COLOUR = "#d62728"
OTHER_COLOUR = "#7f7f7f"


def prediction_chart(prediction: dict[str, Any], title: str = "") -> go.Figure:
    """A bar chart of a prediction (``appcore.analysis.summarise``'s dict).

    multilabel: probability bars with each label's threshold marked (paper 001's per-class thresholds);
    multiclass: probability bars, the predicted class highlighted; grade-regression: the regression value
    on the grade axis with the grade cut-offs drawn.

    Raises:
        ValueError: an unknown task.
    """
    task = prediction.get("task")
    fig = go.Figure()
    if task == "grade-regression":
        cutoffs = prediction["grade_cutoffs"]
        top = max(len(cutoffs) + 0.5, prediction["value"] + 0.5)
        fig.add_bar(x=[prediction["value"]], y=["grade value"], orientation="h", marker_color=PREDICTED_COLOUR,
                    text=[f"{prediction['value']:.2f} → {prediction['label']}"], textposition="outside")
        for cut in cutoffs:
            fig.add_vline(x=cut, line_dash="dot", line_color="#444")
        fig.update_xaxes(range=[min(0.0, prediction["value"] - 0.5), top], title="regression value (grade cut-offs dotted)")
        fig.update_layout(height=180)
    elif task in ("multiclass", "multilabel"):
        labels = list(prediction["probabilities"])
        values = [prediction["probabilities"][label] for label in labels]
        chosen = set(prediction["predicted"])
        colours = [PREDICTED_COLOUR if label in chosen else OTHER_COLOUR for label in labels]
        fig.add_bar(x=labels, y=values, marker_color=colours, name="probability",
                    text=[f"{v:.2f}" for v in values], textposition="outside")
        if task == "multilabel":
            thresholds = [prediction["thresholds"][label] for label in labels]
            fig.add_scatter(x=labels, y=thresholds, mode="markers", name="threshold",
                            marker=dict(symbol="line-ew-open", size=36, line=dict(width=3, color="#1f77b4")))
        fig.update_yaxes(range=[0, 1.12], title="probability")
        fig.update_layout(height=300, showlegend=task == "multilabel")
    else:
        raise ValueError(f"unknown task {task!r} in prediction")
    fig.update_layout(title=title or None, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      template="plotly_white")
    return fig
