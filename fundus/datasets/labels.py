"""Label rules, written once: a data set sample's target in a model's label space.

- DR grades (International Clinical DR scale, ``DR_GRADES``) → the grade, "any DR" (grade ≥ 1) and
  "referable DR" (grade ≥ ``REFERABLE_GRADE``);
- lesion masks (IDRiD) and boxes (YOLO layouts) → lesion present; a lesion type a layout does not
  annotate is unknown (NaN), and where the format says its boxes are incomplete (diaretdb1-boxes, a plain
  yolo folder: ``incompletely_boxed``) a missing box is unknown too (train.recipes.dr_lesions applies it),
  while in idrid-grading-boxes a photo without a box has none of the boxed lesions;
- DR grades → paper 001's lesion labels by the ICDR definitions (mild DR = microaneurysms only);
- class folders (srahim-dr600, ODIR normal / glaucoma / cataract, HRF) → their class, by name;
- diagnoses in ODIR-5K's label space (paper 002: Normal, Diabetes, Glaucoma, Cataract, …) from any class-folder
  or DR-grading set (``diagnosis_target``): a source says only what it grades, the rest stays unknown;
- which label means "no disease found" (``is_no_disease``: healthy, normal, No DR, N).
Used by every recipe (training targets), ``python -m zoo evaluate`` and ``python -m train ship``. Which rule
applies is the data set format's annotation kind (``fundus.datasets.registry``), one converter per kind.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from fundus.tasks import Task, task_of

from .registry import CLASS, DIAGNOSES, DR_GRADE, FORMATS, LESION_BOXES, LESION_MASKS

# International Clinical DR severity scale (APTOS, EyePACS, IDRiD, srahim-dr600): the grades' names, in order.
DR_GRADES = ("No DR", "Mild", "Moderate", "Severe", "Proliferative DR")
DR_GRADE_NAMES = tuple(grade.lower() for grade in DR_GRADES)  # as label spaces are compared (lower case)
# Lesion label aliases across data sets (IDRiD masks, YOLO class names, paper 001's labels): the one table the
# labels of training and the boxes of localisation (python -m explain evaluate) are both read by. DIARETDB1's
# "haemorrhage" boxes bundle microaneurysms.
LESION_ALIASES = {
    "MA": ("ma", "microaneurysms", "microaneurysm", "bp/ma", "bp", "red_small_dots"),
    "HE": ("he", "haemorrhages", "haemorrhage", "hemorrhage", "hemorrhages", "hm"),
    "EX": ("ex", "hard_exudates", "hard exudates", "hard_exudate", "hex", "exudates"),
    "SE": ("se", "soft_exudates", "soft exudates", "soft_exudate", "cotton_wool_spots", "cws"),
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


@dataclass(frozen=True)
class Conversion:
    """One sample's label with the data set's and the model's label spaces (names in lower case), for a converter."""

    label: Any  # the data set's: an int class or grade, or a multi-hot array
    ds_labels: list[str]
    model_labels: list[str]
    task: Task  # the model's
    sample: Any


def sample_target(sample: Any, dataset: Any, labels: Sequence[str], task: str) -> Any:
    """A data set sample's target in a model's label space, or None when it cannot be expressed.

    The converter is chosen by the data set's annotation kind (``annotation_of``: its registered format's fact,
    never its folder's name): ``CONVERTERS`` holds one per kind. A label the data set does not annotate is NaN
    (unknown) in a multi-label target.

    Args:
        sample: a ``fundus.datasets.Sample``.
        dataset: its ``FundusDataset`` (format, labels).
        labels, task: the model's (``config.labels``, ``config.task``).
    """
    label = getattr(sample, "label", None)
    if label is None:
        return None
    conversion = Conversion(label, [_norm(x) for x in getattr(dataset, "labels", [])], [_norm(x) for x in labels],
                            task_of(task), sample)
    return CONVERTERS[annotation_of(dataset, label)](conversion)


def annotation_of(dataset: Any, label: Any = None) -> str:
    """A data set's annotation kind: its registered format's; for one built by hand (no registered format), read
    from a label: a multi-hot one is diagnoses (whose converter falls back to names), else a class."""
    spec = FORMATS.get(getattr(dataset, "format", None) or "")
    if spec is not None:
        return spec.annotation
    return DIAGNOSES if isinstance(label, np.ndarray) else CLASS


def _from_grade(c: Conversion) -> Any:
    """A DR grade: the grade (a grader, a grade regression); diagnoses (``diagnosis_target``); paper 001's lesions
    (``_lesions_of_dr_grade``: grade 0 is healthy, mild DR microaneurysms only, worse not healthy)."""
    if c.task.single_label:
        return float(c.label) if c.task.regression else _same_class(c)
    return _one_label_as_many(c, _lesions_of_dr_grade)


def _from_class(c: Conversion) -> Any:
    """A named class: the model's class of that name; diagnoses (``diagnosis_target``); for lesion labels only a
    no-disease class says something (no lesion). Class folders named as the DR grades are DR grades."""
    if tuple(c.ds_labels) == DR_GRADE_NAMES:
        return _from_grade(c)
    if c.task.single_label:
        return _same_class(c)
    return _one_label_as_many(c, None)


def _from_diagnoses(c: Conversion) -> Any:
    """Multi-hot diagnoses: ODIR-5K's letters (N D G C …) into a model's diagnoses by letter, in its order; other
    columns by name, as lesions are (``_from_lesions``)."""
    keys = [diagnosis_key(d) for d in c.ds_labels]
    if c.task.single_label or c.ds_labels == c.model_labels or not is_diagnosis_space(c.model_labels) \
            or None in keys:
        return _from_lesions(c)
    arr = np.asarray(c.label, dtype=np.float32)
    out = np.full(len(c.model_labels), np.nan, dtype=np.float32)
    for k, name in enumerate(c.model_labels):
        if diagnosis_key(name) in keys:
            out[k] = float(arr[keys.index(diagnosis_key(name))])
    return None if np.isnan(out).all() else out


def _from_lesions(c: Conversion) -> Any:
    """Multi-hot lesion types (masks, boxes): each model label from the data set's labels that are its names
    (``LESION_ALIASES``: IDRiD's MA/HE/EX/SE, YOLO class names); one the data set does not annotate stays unknown;
    a no-disease label is 1 when no lesion is present and none is unknown."""
    if c.task.single_label:
        return None
    arr = np.asarray(c.label, dtype=np.float32)
    if c.ds_labels == c.model_labels:
        return arr.copy()
    out = np.full(len(c.model_labels), np.nan, dtype=np.float32)
    for k, name in enumerate(c.model_labels):
        hits = [j for j, d in enumerate(c.ds_labels) if d in _alias_set(name)]
        if hits:
            out[k] = float(arr[hits].max())
    healthy, lesions = _no_disease_split(c.model_labels)
    for k in healthy:
        if np.nanmax(np.append(out[lesions], 0.0)) > 0:
            out[k] = 0.0
        elif not np.isnan(out[lesions]).any():
            out[k] = 1.0
    return None if np.isnan(out).all() else out


CONVERTERS = {DR_GRADE: _from_grade, CLASS: _from_class, DIAGNOSES: _from_diagnoses, LESION_MASKS: _from_lesions,
              LESION_BOXES: _from_lesions}


def _same_class(c: Conversion) -> Any:
    """One class in a single-label model: the same classes (a grade regression: the value), or the same names in
    another order (class folders); else None."""
    if c.ds_labels == c.model_labels:
        return float(c.label) if c.task.regression else int(c.label)
    if not c.task.regression and sorted(c.ds_labels) == sorted(c.model_labels) and 0 <= int(c.label) < len(c.ds_labels):
        return c.model_labels.index(c.ds_labels[int(c.label)])
    return None


def _one_label_as_many(c: Conversion, disease_rule: Callable[..., np.ndarray] | None) -> np.ndarray | None:
    """A one-label photo in a multi-label space: as diagnoses (``diagnosis_target``); for lesion labels a
    no-disease class says "no lesion", a diseased one what ``disease_rule`` reads from it (None: nothing)."""
    if is_diagnosis_space(c.model_labels):
        return diagnosis_target(int(c.label), c.ds_labels, c.model_labels)
    healthy, _ = _no_disease_split(c.model_labels)
    if not healthy or not 0 <= int(c.label) < len(c.ds_labels):
        return None
    if is_no_disease(c.ds_labels[int(c.label)]):
        out = np.zeros(len(c.model_labels), dtype=np.float32)
        out[healthy] = 1.0
        return out
    return disease_rule(int(c.label), c.model_labels, healthy, c.sample) if disease_rule else None


def _no_disease_split(labels: Sequence[str]) -> tuple[list[int], list[int]]:
    """The positions of a label space's no-disease labels and of the others."""
    healthy = [k for k, name in enumerate(labels) if is_no_disease(name)]
    return healthy, [k for k in range(len(labels)) if k not in healthy]


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


def any_dr(grade: int | float) -> bool:
    """DR yes/no from an ICDR grade."""
    return grade >= 1


def referable_dr(grade: int | float) -> bool:
    """Referable DR (moderate or worse) from an ICDR grade."""
    return grade >= REFERABLE_GRADE


def incompletely_boxed(dataset: Any) -> bool:
    """True for a box data set whose missing boxes say nothing: its format's fact (``DatasetFormat.exhaustive``,
    e.g. diaretdb1-boxes and a plain yolo folder), never its folder's name."""
    spec = FORMATS.get(getattr(dataset, "format", None) or "")
    return spec is not None and spec.annotation == LESION_BOXES and not spec.exhaustive


def missing_boxes_unknown(target: np.ndarray, labels: Sequence[str]) -> np.ndarray | None:
    """A box-derived multi-label target with every unboxed lesion unknown (NaN) instead of absent.

    "healthy" becomes 0 when a lesion is boxed, else unknown. None when nothing is known.
    """
    out = np.where(target > 0, target, np.nan).astype(np.float32)
    healthy, lesions = _no_disease_split(labels)
    out[healthy] = 0.0 if np.nanmax(np.append(out[lesions], 0.0)) > 0 else np.nan
    return None if np.isnan(out).all() else out
