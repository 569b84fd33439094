"""FundusNet: the one model type of the zoo.

Every architecture is a ``FundusNet`` subclass carrying its :class:`~zoo.config.ModelConfig`, so
whatever loads a model (explanation engine, training, app) reads its output the same way:
``forward`` gives raw scores, ``probabilities`` and ``decide`` turn them into the task's answer.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fundus.datasets.labels import HEALTHY_NAMES
from zoo.config import ModelConfig

# Labels that mean "no disease found" (compared case-insensitively), written once with the label rules.
NO_DISEASE_LABELS = HEALTHY_NAMES
_EPS = 1e-7  # probabilities and thresholds are clipped to [eps, 1 - eps] before their log-odds are taken


def is_no_disease(label: str) -> bool:
    """Whether a label means "no disease found" (``NO_DISEASE_LABELS``)."""
    return str(label).strip().lower() in NO_DISEASE_LABELS


def no_disease_index(labels) -> int | None:
    """The index of a multi-label model's no-disease label, or None when it has none (or only that label)."""
    found = [i for i, label in enumerate(labels) if is_no_disease(label)]
    return found[0] if len(found) == 1 and len(labels) > 1 else None


def decision_rule(config: ModelConfig) -> str:
    """The model's decision rule in one or two sentences, for model cards and the app."""
    if config.task == "multiclass":
        return "One label: the most probable (softmax argmax); the labels exclude each other."
    if config.task == "grade-regression":
        cuts = ", ".join(f"{c:g}" for c in config.grade_cutoffs)
        return (f"One grade: the number of cut-offs ({cuts}) the regression value exceeds; "
                "the grades exclude each other.")
    k = no_disease_index(config.labels)
    base = "Each label is predicted when its probability reaches its own threshold (the model's config)."
    if k is None:
        return base
    others = ", ".join(label for i, label in enumerate(config.labels) if i != k)
    return (f"{base} '{config.labels[k]}' and the other labels ({others}) exclude each other: when both "
            f"sides reach their thresholds, the side further above its threshold in log-odds "
            f"(log p/(1-p) − log t/(1-t)) is kept and the other is overruled (a tie keeps the disease side).")


class FundusNet(nn.Module):
    """Base class of all zoo models.

    Subclasses build their modules in ``__init__`` and implement ``forward(x) -> (B, num_outputs)``:
    logits for classification tasks, the grade value for ``grade-regression``.
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
            softmax (multiclass), sigmoid (multilabel), or the regression value itself.
        """
        task = self.config.task
        if task == "multiclass":
            return out.softmax(dim=-1)
        if task == "multilabel":
            return out.sigmoid()
        return out

    def decide(self, out: torch.Tensor, *, exclusive: bool = True) -> torch.Tensor:
        """Decisions from raw outputs (``decision_rule(config)`` says the rule in words).

        Args:
            out: ``(B, num_outputs)`` raw model output.
            exclusive: multilabel only: apply the no-disease exclusion (below); False gives every label
                over its threshold, contradictions included.

        Returns:
            multiclass: ``(B,)`` predicted class index; multilabel: ``(B, N)`` bool, probability >=
            the label's threshold (paper 001's per-class thresholds), where a no-disease label
            (``NO_DISEASE_LABELS``: "healthy", "normal", …) and the disease labels exclude each other:
            when both sides reach their thresholds, the side whose best label lies further above its
            threshold in log-odds is kept (a tie keeps the disease side); grade-regression: ``(B,)``
            grade = number of ``grade_cutoffs`` the value exceeds.
        """
        task = self.config.task
        if task == "multiclass":
            return out.argmax(dim=-1)
        if task == "multilabel":
            thresholds = torch.as_tensor(self.config.thresholds, dtype=out.dtype, device=out.device)
            if thresholds.numel() != out.shape[-1]:
                raise ValueError(
                    f"config.thresholds has {thresholds.numel()} values for {out.shape[-1]} outputs"
                )
            over = out.sigmoid() >= thresholds
            k = no_disease_index(self.config.labels) if exclusive else None
            if k is None:
                return over
            return _exclude_no_disease(out.sigmoid(), thresholds, over, k)
        cutoffs = torch.as_tensor(self.config.grade_cutoffs, dtype=out.dtype, device=out.device)
        return (out.reshape(-1, 1) > cutoffs).sum(dim=-1)

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


def _exclude_no_disease(probs: torch.Tensor, thresholds: torch.Tensor, over: torch.Tensor, k: int) -> torch.Tensor:
    """``over`` with the no-disease label ``k`` and the disease labels made exclusive (see ``decide``)."""
    def logit(p: torch.Tensor) -> torch.Tensor:
        p = p.double().clamp(_EPS, 1 - _EPS)
        return torch.log(p) - torch.log1p(-p)

    margin = logit(probs) - logit(thresholds).expand_as(probs)
    disease = torch.ones(over.shape[-1], dtype=torch.bool, device=over.device)
    disease[k] = False
    disease_over = over & disease
    best_disease = torch.where(disease_over, margin, torch.full_like(margin, -torch.inf)).amax(dim=-1)
    conflict = over[..., k] & disease_over.any(dim=-1)
    keep_healthy = margin[..., k] > best_disease
    decided = over.clone()
    decided[conflict & keep_healthy] &= ~disease
    decided[..., k] &= ~(conflict & ~keep_healthy)
    return decided
