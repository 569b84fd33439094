"""The classification chart (plotly): class probabilities with their decision rule marked."""
from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from fundus.tasks import MULTILABEL, TASKS, task_of

PREDICTED_COLOUR = "#d62728"
OVERRULED_COLOUR = "#f4a582"  # over its threshold, but overruled by the no-disease rule
OTHER_COLOUR = "#7f7f7f"
THRESHOLD_COLOUR = "#1f77b4"


def prediction_chart(prediction: dict[str, Any], title: str = "", height: int | None = None) -> go.Figure:
    """A bar chart of a prediction (``explain.pipeline.summarise``'s dict).

    Multi-label: probability bars with each label's threshold (from the model's config) marked, the decided
    labels in red and overruled ones (over their threshold, but excluded by the no-disease rule) in light red;
    multi-class: probability bars, the predicted class highlighted; grade regression: the regression value on
    the grade axis with the grade cut-offs drawn and the grades named between them.

    Raises:
        ValueError: an unknown task.
    """
    if prediction.get("task") not in TASKS:
        raise ValueError(f"unknown task {prediction.get('task')!r} in prediction")
    task = task_of(prediction["task"])
    fig = go.Figure()
    if task.regression:
        cutoffs = prediction["grade_cutoffs"]
        labels = prediction.get("labels") or []
        low = min(0.0, prediction["value"] - 0.5)
        top = max(len(cutoffs) + 0.5, prediction["value"] + 0.5)
        fig.add_bar(x=[prediction["value"]], y=["value"], orientation="h", marker_color=PREDICTED_COLOUR,
                    text=[f"{prediction['value']:.2f}"], textposition="outside", name="regression value")
        for cut in cutoffs:
            fig.add_vline(x=cut, line_dash="dot", line_color="#444")
        edges = [low, *cutoffs, top]
        for index, label in enumerate(labels[:len(edges) - 1]):
            fig.add_annotation(x=(max(edges[index], low) + min(edges[index + 1], top)) / 2, y=1.0, yref="paper",
                               text=label, showarrow=False, font=dict(size=10), yanchor="bottom")
        fig.update_xaxes(range=[low, top], title="regression value; dotted: grade cut-offs")
        fig.update_layout(height=height or 170, showlegend=False)
    else:
        labels = list(prediction["probabilities"])
        values = [prediction["probabilities"][label] for label in labels]
        chosen = set(prediction["predicted"])
        overruled = set(prediction.get("overruled") or [])
        colours = [PREDICTED_COLOUR if label in chosen else OVERRULED_COLOUR if label in overruled else OTHER_COLOUR
                   for label in labels]
        fig.add_bar(x=labels, y=values, marker_color=colours, name="probability",
                    text=[f"{100 * v:.0f}%" for v in values], textposition="outside")
        if task is MULTILABEL:
            thresholds = [prediction["thresholds"][label] for label in labels]
            fig.add_scatter(x=labels, y=thresholds, mode="markers", name="threshold (the model's)",
                            marker=dict(symbol="line-ew-open", size=30, color=THRESHOLD_COLOUR,
                                        line=dict(width=3, color=THRESHOLD_COLOUR)))
        fig.update_yaxes(range=[0, 1.15], title="probability", tickformat=".0%")
        fig.update_layout(height=height or 260, showlegend=task is MULTILABEL,
                          legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0))
    fig.update_layout(title=title or None, margin=dict(l=10, r=10, t=40 if title else 24, b=10),
                      template="plotly_white")
    return fig
