"""FundusNet: the one model type of the zoo.

Every architecture is a ``FundusNet`` subclass carrying its :class:`~zoo.config.ModelConfig`, so
whatever loads a model (explanation engine, training, app) reads its output the same way:
``forward`` gives raw scores, ``probabilities`` and ``decide`` turn them into the task's answer.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fundus.datasets.labels import no_disease_index
from fundus.tasks import finding_thresholds, grade_rule, task_of
from zoo.config import ModelConfig


def decision_rule(config: ModelConfig) -> str:
    """The model's decision rule in one or two sentences, for model cards and the app."""
    rule = grade_rule(config)
    return task_of(config.task).decision_rule(config.labels, rule["cutoffs"], no_disease_index(config.labels),
                                              expected_cutoffs=rule["expected_cutoffs"])


class FundusNet(nn.Module):
    """Base class of all zoo models.

    Subclasses build their modules in ``__init__`` and implement ``forward(x) -> (B, num_outputs)``:
    logits for classification tasks, the grade value for a grade regression (``fundus.tasks``).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a zoo.config.ModelConfig, got {type(config).__name__}")
        self.config = config

    def probabilities(self, out: torch.Tensor) -> torch.Tensor:
        """Turn raw outputs into the task's scores.

        Args:
            out: ``(B, num_outputs)`` raw model output.

        Returns:
            softmax (multiclass), sigmoid (multilabel), or the regression value itself (``fundus.tasks``).
        """
        return task_of(self.config.task).probabilities(out)

    def decide(self, out: torch.Tensor, *, exclusive: bool = True) -> torch.Tensor:
        """Decisions from raw outputs (``decision_rule(config)`` says the rule in words).

        Args:
            out: ``(B, num_outputs)`` raw model output.
            exclusive: multilabel only: apply the no-disease exclusion (below); False gives every label
                over its threshold, contradictions included.

        Returns:
            multiclass: ``(B,)`` predicted class index (the most probable, or the expected grade cut at
            ``expected_grade_cutoffs``: ``fundus.tasks.grade_rule``); multilabel: ``(B, N)`` bool, probability >=
            the label's threshold (paper 001's per-class thresholds, each at least
            ``fundus.tasks.FINDING_FLOOR``), where a no-disease label
            (``fundus.datasets.labels.is_no_disease``: "healthy", "normal", …) and the disease labels exclude each other:
            when both sides reach their thresholds, the side whose best label lies further above its
            threshold in log-odds is kept (a tie keeps the disease side); grade regression: ``(B,)``
            grade = number of ``grade_cutoffs`` the value exceeds.

        Raises:
            ValueError: a multilabel config whose threshold count is not the output count.
        """
        c = self.config
        no_disease = no_disease_index(c.labels) if exclusive else None
        return task_of(c.task).decide(out, thresholds=finding_thresholds(c.thresholds), no_disease=no_disease,
                                      **grade_rule(c))

    def save_pretrained(self, folder: str | Path, *, dtype: torch.dtype | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and a model card ``README.md`` into ``folder``.

        Args:
            folder: target folder (created if missing).
            dtype: store floating-point weights in this dtype (e.g. ``torch.float16`` for shipping);
                default keeps fp32. Loading always casts back to fp32.

        Returns:
            The folder path.
        """
        from zoo.factory import save_pretrained

        return save_pretrained(self, folder, dtype=dtype)

    @classmethod
    def from_pretrained(cls, source: str | Path, *, revision: str | None = None,
                        device: str | torch.device | None = None) -> "FundusNet":
        """Hugging Face-style alias of :func:`zoo.load` (a shipped name, a folder or a hub repo id).

        Raises:
            TypeError: the loaded model is not a ``cls`` (e.g. ``SimpleCNN.from_pretrained`` on a ResNet).
        """
        from zoo.factory import load

        model = load(source, revision=revision, device=device)
        if not isinstance(model, cls):
            raise TypeError(f"{source} holds a {type(model).__name__} ({model.config.arch}), not a {cls.__name__}")
        return model

    def layer(self, name: str) -> nn.Module:
        """The module named by a dotted config layer name (``target_layer`` …).

        Raises:
            ValueError: no such module.
        """
        try:
            return self.get_submodule(name)
        except AttributeError as err:
            raise ValueError(f"{type(self).__name__} ({self.config.arch}) has no layer {name!r}") from err

    def extra_repr(self) -> str:
        c = self.config
        return f"name={c.name!r}, arch={c.arch!r}, paper={c.paper!r}, task={c.task!r}, outputs={c.num_outputs}"

