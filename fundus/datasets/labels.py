"""Label rules, written once: a data set sample's target in a model's label space.

- DR grades (International Clinical DR scale, ``DR_GRADES``) → the grade, "any DR" (grade ≥ 1) and
  "referable DR" (grade ≥ ``REFERABLE_GRADE``);
- lesion masks (IDRiD) and boxes (YOLO layouts) → lesion present; a lesion type a layout does not
  annotate is unknown (NaN), and for incompletely boxed sets (DIARETDB1) a missing box is unknown too
  (``MISSING_BOX_UNKNOWN``; train.recipes.dr_lesions applies it), while in idrid-grading-boxes a photo
  without a box has none of the boxed lesions;
- DR grades → paper 001's lesion labels by the ICDR definitions (mild DR = microaneurysms only);
- class folders (srahim-dr600, ODIR normal / glaucoma / cataract, HRF) → their class, by name;
- diagnoses in ODIR-5K's label space (paper 002: Normal, Diabetes, Glaucoma, Cataract, …) from any class-folder
  or DR-grading set (``diagnosis_target``): a source says only what it grades, the rest stays unknown;
- which label means "no disease found" (``is_no_disease``: healthy, normal, No DR, N).
Used by every recipe (training targets), ``python -m zoo evaluate`` and ``python -m train ship``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fundus.tasks import task_of

# International Clinical DR severity scale (APTOS, EyePACS, IDRiD, srahim-dr600): the grades' names, in order.
DR_GRADES = ("No DR", "Mild", "Moderate", "Severe", "Proliferative DR")
DR_GRADE_NAMES = tuple(grade.lower() for grade in DR_GRADES)  # as label spaces are compared (lower case)
# Lesion label aliases across data sets (IDRiD masks, YOLO class names, paper 001's labels).
LESION_ALIASES = {
    "MA": ("ma", "microaneurysms", "microaneurysm", "bp/ma", "bp", "red_small_dots"),
    "HE": ("he", "haemorrhages", "haemorrhage", "hemorrhage", "hemorrhages", "hm"),
    "EX": ("ex", "hard_exudates", "hard exudates", "hard_exudate", "hex"),
    "SE": ("se", "soft_exudates", "soft exudates", "cotton_wool_spots", "cws"),
}

# What the codes stand for, in the words a clinician reads on the page and in the cards.
LESION_NAMES = {"MA": "microaneurysms", "HE": "haemorrhages", "EX": "hard exudates", "SE": "cotton-wool spots"}


def _norm(name: str) -> str:
    return str(name).strip().lower()


# Labels that mean "no disease found": "healthy" (paper 001), "normal", "No DR" (the DR grades), "N" (ODIR-5K).
HEALTHY_NAMES = ("healthy", "normal", "no dr", "no disease", "n")


def is_no_disease(label: str) -> bool:
    """Whether a label means "no disease found" (``HEALTHY_NAMES``, compared case-insensitively)."""
    return _norm(label) in HEALTHY_NAMES


def no_disease_index(labels: Sequence[str]) -> int | None:
    """The index of a label space's one no-disease label, or None when it has none (or only that label); a
    multi-label model's decision makes it exclusive of the disease labels (``fundus.tasks``)."""
    found = [i for i, label in enumerate(labels) if is_no_disease(label)]
    return found[0] if len(found) == 1 and len(labels) > 1 else None
# ODIR-5K's eight diagnoses (paper 002) and the names other data sets give them (class folders, HRF's suffixes).
DIAGNOSIS_ALIASES = {
    "N": ("n", "normal", "healthy", "no disease"),
    "D": ("d", "diabetes", "dr", "diabetic retinopathy", "diabetic_retinopathy"),
    "G": ("g", "glaucoma"),
    "C": ("c", "cataract"),
    "A": ("a", "amd", "age-related macular degeneration"),
    "H": ("h", "hypertension", "hypertensive retinopathy"),
    "M": ("m", "myopia", "pathological myopia"),
    "O": ("o", "other", "others", "other diseases/abnormalities"),
}
# ODIR-5K's own names for its letters, e.g. the shipped eye-diseases model's labels.
DIAGNOSIS_NAMES = {"N": "Normal", "D": "Diabetes", "G": "Glaucoma", "C": "Cataract", "A": "AMD",
                   "H": "Hypertension", "M": "Myopia", "O": "Other"}


def lesion_code(name: str) -> str | None:
    """IDRiD's lesion code (MA, HE, EX, SE) of a label or class name ("BP/MA", "HM", "hard_exudates" → "MA",
    "HE", "EX"), None for other names ("healthy", "optic_disc")."""
    n = _norm(name)
    return next((key for key, names in LESION_ALIASES.items() if n == key.lower() or n in names), None)


def spelled_out(label: str) -> str:
    """A label as the page shows it: a lesion code with its name ("HM" → "haemorrhages (HM)", "BP/MA" →
    "microaneurysms (BP/MA)"), any other label as it is."""
    code = lesion_code(label)
    if code is None or _norm(label) == LESION_NAMES[code]:
        return label
    return f"{LESION_NAMES[code]} ({label})"


# A DR grader answers with a DR grade whatever the eye has (issue 18: two of two cataract eyes got "Proliferative
# DR"): the page and the card say so wherever such a model is shown.
DR_ONLY = ("It knows diabetic retinopathy only: it gives every photo a DR grade, also an eye with another disease "
           "(cataract, glaucoma, …), where the grade means nothing.")


def is_dr_grader(labels: Sequence[str]) -> bool:
    """Whether a label space is the DR severity scale (``DR_GRADES``): such a model knows DR only."""
    return tuple(_norm(label) for label in labels) == DR_GRADE_NAMES


def what_it_answers(labels: Sequence[str]) -> str:
    """A model's question in a few words, from its labels: "DR grade 0–4", "DR lesions", or its disease labels
    ("diabetes / glaucoma / cataract")."""
    if is_dr_grader(labels):
        return f"DR grade 0–{len(DR_GRADES) - 1}"
    diseases = [label for label in labels if not is_no_disease(label)]
    if diseases and all(lesion_code(label) for label in diseases):
        return "DR lesions"
    return " / ".join(label.lower() for label in diseases) or "no disease labels"


def diagnosis_key(name: str) -> str | None:
    """ODIR-5K's letter for a diagnosis name ("Glaucoma", "g", "DR" → "G", "D"), None for other names."""
    n = _norm(name)
    return next((key for key, names in DIAGNOSIS_ALIASES.items() if n in names), None)


def is_diagnosis_space(labels: Sequence[str]) -> bool:
    """True for a label space of ODIR-5K diagnoses with its Normal label (paper 002's models)."""
    keys = [diagnosis_key(x) for x in labels]
    return None not in keys and "N" in keys and len(set(keys)) == len(keys)


def _alias_set(label: str) -> set[str]:
    """Names a label goes by across data sets (itself plus the lesion aliases)."""
    n = _norm(label)
    for key, names in LESION_ALIASES.items():
        if n == key.lower() or n in names:
            return {key.lower(), *names}
    return {n}


def sample_target(sample: Any, dataset: Any, labels: Sequence[str], task: str) -> Any:
    """A data set sample's target in a model's label space, or None when it cannot be expressed.

    - same class names as the data set: its label (multiclass index, multi-hot reordered);
    - DR grades (a multi-class grader or a grade regression) from any DR grading layout;
    - multilabel lesion labels (paper 001's BP/MA, HM, HEX, CWS, healthy) from any multilabel set
      whose classes are aliases of them (IDRiD MA/HE/EX/SE masks, YOLO class names): a label the
      data set does not annotate is NaN (unknown); "healthy" is 1 when no lesion is present and
      none is unknown; from a multiclass set only its healthy class is usable (all lesions 0).

    Args:
        sample: a ``fundus.datasets.Sample``.
        dataset: its ``FundusDataset`` (labels, task).
        labels, task: the model's (``config.labels``, ``config.task``).
    """
    label = getattr(sample, "label", None)
    if label is None:
        return None
    ds_labels = [_norm(x) for x in getattr(dataset, "labels", [])]
    model_labels = [_norm(x) for x in labels]
    ds_multilabel = isinstance(label, np.ndarray)
    task = task_of(task)
    if task.single_label and not ds_multilabel:
        if ds_labels == model_labels or (tuple(ds_labels) == DR_GRADE_NAMES and tuple(model_labels) == DR_GRADE_NAMES):
            return float(label) if task.regression else int(label)
        if task.regression and tuple(ds_labels) == DR_GRADE_NAMES:
            return float(label)
        if not task.regression and sorted(ds_labels) == sorted(model_labels) and 0 <= int(label) < len(ds_labels):
            return model_labels.index(ds_labels[int(label)])  # the same classes in another order (class folders)
        return None
    if task.single_label:
        return None
    out = np.full(len(labels), np.nan, dtype=np.float32)
    if ds_multilabel:
        arr = np.asarray(label, dtype=np.float32)
        if ds_labels == model_labels:
            return arr.copy()
        if is_diagnosis_space(model_labels) and all(diagnosis_key(d) for d in ds_labels):
            ds_keys = [diagnosis_key(d) for d in ds_labels]  # e.g. ODIR-5K's N D G C … columns
            for k, name in enumerate(model_labels):
                if diagnosis_key(name) in ds_keys:
                    out[k] = float(arr[ds_keys.index(diagnosis_key(name))])
            return None if np.isnan(out).all() else out
        for k, name in enumerate(model_labels):
            hits = [j for j, d in enumerate(ds_labels) if d in _alias_set(name)]
            if hits:
                out[k] = float(arr[hits].max())
        healthy = [k for k, name in enumerate(model_labels) if is_no_disease(name)]
        lesions = [k for k in range(len(labels)) if k not in healthy]
        for k in healthy:
            if np.nanmax(np.append(out[lesions], 0.0)) > 0:
                out[k] = 0.0
            elif not np.isnan(out[lesions]).any():
                out[k] = 1.0
        return None if np.isnan(out).all() else out
    if is_diagnosis_space(model_labels):
        return diagnosis_target(int(label), ds_labels, model_labels)
    # A multiclass data set: its healthy class says "no lesion"; DR grades say a little more.
    healthy = [k for k, name in enumerate(model_labels) if is_no_disease(name)]
    if not healthy or not 0 <= int(label) < len(ds_labels):
        return None
    if is_no_disease(ds_labels[int(label)]):
        out[:] = 0.0
        out[healthy] = 1.0
        return out
    if tuple(ds_labels) == DR_GRADE_NAMES:
        return _lesions_of_dr_grade(int(label), model_labels, healthy, sample)
    return None


def diagnosis_target(label: int, ds_labels: Sequence[str], model_labels: Sequence[str]) -> np.ndarray | None:
    """A one-class-per-photo sample as ODIR-5K diagnoses (paper 002's multi-label space); NaN = unknown.

    A source says only what it grades:
    - DR grading sets (EyePACS, srahim-dr600): grade ≥ 1 is Diabetes (and not Normal); grade 0 is Normal and
      not Diabetes. Glaucoma and cataract are not graded there, so they stay unknown — a DR screening photo
      counts as Normal when it has no DR (the approximation this rule makes).
    - class folders whose classes are diagnoses (ODIR normal / glaucoma / cataract, HRF healthy / DR /
      glaucoma): the class is 1 and the set's other classes 0 (one class per eye); a normal eye has no
      disease at all (every label 0); a diseased eye's other diseases that the set does not grade stay unknown
      (an ODIR glaucoma eye may also have DR).
    None when the class is not a diagnosis.
    """
    ds = [_norm(x) for x in ds_labels]
    keys = [diagnosis_key(x) for x in model_labels]
    if tuple(ds) == DR_GRADE_NAMES:
        own, graded, screening = ("D" if label >= 1 else "N"), {"N", "D"}, True
    else:
        own, graded, screening = diagnosis_key(ds[label]), {diagnosis_key(x) for x in ds} - {None}, False
    if own is None:
        return None
    out = np.full(len(keys), np.nan, dtype=np.float32)
    for k, key in enumerate(keys):
        if key == own:
            out[k] = 1.0
        elif key in graded or key == "N" or (own == "N" and not screening):
            out[k] = 0.0
    return out


def _lesions_of_dr_grade(grade: int, model_labels: list[str], healthy: list[int], sample: Any) -> np.ndarray:
    """What a DR grade ≥ 1 says about paper 001's labels (International Clinical DR scale).

    Any DR: not healthy. Mild DR is "microaneurysms only": MA 1, haemorrhages and exudates 0 — except
    where the data set marks maculopathy (srahim-dr600), which means exudates near the macula, so EX
    and SE stay unknown. Moderate or worse: which lesions are present is not said (NaN).
    """
    out = np.full(len(model_labels), np.nan, dtype=np.float32)
    out[healthy] = 0.0
    if grade != 1:
        return out
    maculopathy = bool((getattr(sample, "meta", None) or {}).get("maculopathy"))
    for k, name in enumerate(model_labels):
        aliases = _alias_set(name)
        if aliases & _alias_set("MA"):
            out[k] = 1.0
        elif aliases & _alias_set("HE") or (aliases & (_alias_set("EX") | _alias_set("SE")) and not maculopathy):
            out[k] = 0.0
    return out


# ------------------------------------------------------------------------------------ CLI


# ICDR: grade 2 (moderate NPDR) or worse, or any maculopathy, is referable; grade ≥ 1 is "any DR".
REFERABLE_GRADE = 2
# Box sets whose photos are boxed incompletely: an absent box says nothing (see ../shared/data/README.md).
MISSING_BOX_UNKNOWN = ("diaretdb1-boxes",)


def any_dr(grade: int | float) -> bool:
    """DR yes/no from an ICDR grade."""
    return grade >= 1


def referable_dr(grade: int | float) -> bool:
    """Referable DR (moderate or worse) from an ICDR grade."""
    return grade >= REFERABLE_GRADE


def incompletely_boxed(dataset: Any) -> bool:
    """True for a box data set whose missing boxes say nothing (``MISSING_BOX_UNKNOWN``, by folder name)."""
    from pathlib import Path

    return getattr(dataset, "format", "") == "yolo" and Path(getattr(dataset, "root", "")).name in MISSING_BOX_UNKNOWN


def missing_boxes_unknown(target: np.ndarray, labels: Sequence[str]) -> np.ndarray | None:
    """A box-derived multi-label target with every unboxed lesion unknown (NaN) instead of absent.

    "healthy" becomes 0 when a lesion is boxed, else unknown. None when nothing is known.
    """
    out = np.where(target > 0, target, np.nan).astype(np.float32)
    healthy = [k for k, name in enumerate(labels) if is_no_disease(name)]
    lesions = [k for k in range(len(labels)) if k not in healthy]
    out[healthy] = 0.0 if np.nanmax(np.append(out[lesions], 0.0)) > 0 else np.nan
    return None if np.isnan(out).all() else out
