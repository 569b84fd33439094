"""Patient-level splits: no patient's photos in two parts (both eyes of one person are correlated).

Stratified by the patient's label so that rare grades/diseases reach every part. Used for the
train/validation split and for paper 000's 5-fold bagging (``patient_kfold``).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from .base import Sample


def _patients_in_strata_order(
    samples: Sequence[Sample], seed: int, stratify: bool
) -> tuple[list[str], dict[str, list[int]]]:
    """Patient ids ordered by stratum, shuffled within each stratum; and each patient's sample indices."""
    by_patient: dict[str, list[int]] = defaultdict(list)
    for i, sample in enumerate(samples):
        by_patient[sample.patient_id or f"__sample_{i}"].append(i)
    rng = np.random.default_rng(seed)
    patients = sorted(by_patient)
    order = rng.permutation(len(patients))
    shuffled = [patients[i] for i in order]
    if not stratify:
        return shuffled, by_patient
    strata = _strata(samples, by_patient)
    # A stable sort keeps the random order inside each stratum.
    return sorted(shuffled, key=lambda p: strata[p]), by_patient


def _strata(samples: Sequence[Sample], by_patient: dict[str, list[int]]) -> dict[str, int]:
    """Multiclass: the patient's highest grade/class. Multilabel: the patient's rarest label (-1 none)."""
    labels = [s.label for s in samples]
    multilabel = any(isinstance(lab, np.ndarray) for lab in labels)
    if not multilabel:
        return {p: max((-1 if labels[i] is None else int(labels[i])) for i in idx) for p, idx in by_patient.items()}
    frequency = np.sum([lab for lab in labels if lab is not None], axis=0)
    strata = {}
    for p, idx in by_patient.items():
        present = np.zeros_like(frequency, dtype=bool)
        for i in idx:
            if labels[i] is not None:
                present |= np.asarray(labels[i]) > 0
        strata[p] = int(np.argmin(np.where(present, frequency, np.inf))) if present.any() else -1
    return strata


def patient_split(
    samples: Sequence[Sample], val_fraction: float = 0.2, seed: int = 0, stratify: bool = True
) -> tuple[list[Sample], list[Sample]]:
    """Split samples into (train, val) by patient.

    Patients are ordered by stratum and taken for validation at a regular stride, so every
    stratum gives about ``val_fraction`` of its patients.

    Args:
        samples: the samples (``Sample.patient_id`` groups them; empty ids count as one patient each).
        val_fraction: fraction of patients for validation, in (0, 1).
        seed: makes the split reproducible.
        stratify: balance the label distribution between the parts.

    Raises:
        ValueError: ``val_fraction`` outside (0, 1) or fewer than 2 patients.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    patients, by_patient = _patients_in_strata_order(samples, seed, stratify)
    if len(patients) < 2:
        raise ValueError(f"need at least 2 patients to split, got {len(patients)}")
    offset = np.random.default_rng([seed, 7]).random()
    val_patients = {p for k, p in enumerate(patients)
                    if np.floor((k + 1) * val_fraction + offset) > np.floor(k * val_fraction + offset)}
    if not val_patients:
        val_patients = {patients[-1]}
    if len(val_patients) == len(patients):
        val_patients.discard(patients[0])
    train = [samples[i] for p in patients if p not in val_patients for i in by_patient[p]]
    val = [samples[i] for p in patients if p in val_patients for i in by_patient[p]]
    return train, val


def patient_kfold(
    samples: Sequence[Sample], k: int = 5, seed: int = 0, stratify: bool = True
) -> list[tuple[list[Sample], list[Sample]]]:
    """``k`` (train, val) folds by patient; each patient is in exactly one val part (paper 000's 5-fold bagging).

    Raises:
        ValueError: ``k < 2`` or fewer patients than folds.
    """
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    patients, by_patient = _patients_in_strata_order(samples, seed, stratify)
    if len(patients) < k:
        raise ValueError(f"need at least {k} patients for {k} folds, got {len(patients)}")
    fold_of = {p: i % k for i, p in enumerate(patients)}  # round-robin over strata-ordered patients
    folds = []
    for f in range(k):
        train = [samples[i] for p in patients if fold_of[p] != f for i in by_patient[p]]
        val = [samples[i] for p in patients if fold_of[p] == f for i in by_patient[p]]
        folds.append((train, val))
    return folds


# The project's held-out parts, the same for every recipe and model: per source, by patient,
# ``TEST_FRACTION`` of the patients for the test part (touched once, by the shipped model) and
# ``VAL_FRACTION`` for validation (early stopping, thresholds, choosing between candidates).
SPLIT_SEED = 0
VAL_FRACTION = 0.15
TEST_FRACTION = 0.2
PARTS = ("train", "val", "test")


def source_of(sample) -> str:
    """The data set a sample comes from (``LabelledSample.source``; fundus Samples carry it in meta)."""
    return str(getattr(sample, "source", "") or getattr(sample, "meta", {}).get("source", ""))


def train_val_test_split(
    samples: Sequence[Sample], val_fraction: float = VAL_FRACTION, test_fraction: float = TEST_FRACTION,
    seed: int = SPLIT_SEED, stratify: bool = True,
) -> dict[str, list]:
    """Split every source by patient into train / val / test (``PARTS``).

    Each source (``source_of``) is split on its own, so a source's parts do not depend on which other
    sources a run combines: a model trained without a source is tested on that source's same test
    patients. Test patients are drawn first (``test_fraction`` of each source's patients), then
    validation patients from the rest so that they are ``val_fraction`` of the source's patients.

    Raises:
        ValueError: fractions outside [0, 1) or summing to 1 or more.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 <= val_fraction, test_fraction and their sum < 1; got {val_fraction}, {test_fraction}")
    by_source: dict[str, list] = defaultdict(list)
    for s in samples:
        by_source[source_of(s)].append(s)
    out: dict[str, list] = {part: [] for part in PARTS}
    for source in sorted(by_source):
        rest, test = list(by_source[source]), []
        if test_fraction > 0 and len({s.patient_id for s in rest}) >= 3:
            rest, test = patient_split(rest, val_fraction=test_fraction, seed=seed, stratify=stratify)
        val: list = []
        if val_fraction > 0 and len({s.patient_id for s in rest}) >= 2:
            rest, val = patient_split(rest, val_fraction=val_fraction / (1 - test_fraction), seed=seed + 1,
                                      stratify=stratify)
        out["train"] += rest
        out["val"] += val
        out["test"] += test
    return out
