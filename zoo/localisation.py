"""A model's localisation row (``ModelConfig.localisation``) in words: the card's table and the panels' captions.

``python -m explain evaluate --write-config`` measures and writes it; this module only reads it, so that the card
(``zoo.card``) and the app (``explain.views``) say the same. Its shape, one entry per method (a map the app can
show, and the image-only ``spot-filter``)::

    {"gradcam": {"title": "Grad-CAM", "data": "idrid-seg-dev", "format": "idrid-seg", "split": "test",
                 "photos": 16, "road": 0.12,
                 "lesions": {"HE": {"epg": 0.045, "epg_ratio": 2.4, "blind_guess": "baseline-uniform",
                                    "pointing_game": 0.5, "pr_auc": 0.03}}}}

``epg_ratio``: the method's energy pointing game (Wang et al. 2020) over the best trivial map's (uniform over the
field of view, or a centred Gaussian, whichever scored higher on that lesion); ``road``: pytorch-grad-cam's
ROADCombined (``explain.faithfulness``), None where it was not measured.
"""
from __future__ import annotations

from fundus.datasets.labels import spelled_out
from fundus.datasets.registry import data_title

SPLIT_WORDS = {"test": "test photos", "val": "validation photos", "train": "training photos", "all": "all photos"}


def _measured_on(entry: dict) -> str:
    """"IDRiD" for an entry measured on ``idrid-seg-dev`` read as idrid-seg: its format's title, else the folder."""
    return data_title(entry.get("format", ""), entry["data"])


def lesion_name(code: str) -> str:
    """"haemorrhages" for HE (``spelled_out`` without its code)."""
    return spelled_out(code).split(" (")[0]


def _number(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ratio(value) -> str:
    return "—" if value is None else f"{value:.1f}×"


def card_lines(localisation: dict) -> list[str]:
    """The card's "Localisation" section: one row per (method, lesion), or nothing for a model never measured."""
    if not localisation:
        return []
    first = next(iter(localisation.values()))
    lines = ["## Localisation", "",
             f"Measured on {_measured_on(first)} ({first['data']}, {SPLIT_WORDS.get(first['split'], first['split'])}"
             f", {first['photos']} photos) against its lesion annotations: EPG = share of the map's energy on the "
             "lesions (energy pointing game), × blind guess = EPG over the best map that knows nothing (uniform over "
             "the field of view or a centred Gaussian), PG = pointing game, PR-AUC = area under the precision–recall "
             "curve of the map's pixels, ROAD = faithfulness (pytorch-grad-cam's ROADCombined in the model's output "
             "units: higher, the model relies more on what the map shows; compare within a model). "
             "`spot-filter` is a dark/bright-spot filter on the photo alone, no model.", "",
             "| map | lesion | EPG | × blind guess | PG | PR-AUC | ROAD |", "|---|---|---|---|---|---|---|"]
    for method, entry in localisation.items():
        for code, row in entry.get("lesions", {}).items():
            lines.append(f"| {entry.get('title', method)} | {lesion_name(code)} | {_number(row.get('epg'))} | "
                         f"{_ratio(row.get('epg_ratio'))} | {_number(row.get('pointing_game'), 2)} | "
                         f"{_number(row.get('pr_auc'))} | {_number(entry.get('road'))} |")
    return lines


def panel_caption(localisation: dict, method: str) -> str:
    """The caption under a panel, e.g. "Grad-CAM, on IDRiD (test photos): this map put 2.4× more energy on
    haemorrhages than a blind guess, 1.3× on hard exudates"; '' for a method (or a model) never measured."""
    entry = (localisation or {}).get(method)
    if not entry or not entry.get("lesions"):
        return ""
    ratios = [(lesion_name(code), row["epg_ratio"]) for code, row in entry["lesions"].items()
              if row.get("epg_ratio") is not None]
    if not ratios:
        return ""
    (first, ratio), rest = ratios[0], ratios[1:]
    where = f"on {_measured_on(entry)} ({SPLIT_WORDS.get(entry['split'], entry['split'])})"
    text = (f"{entry.get('title', method)}, {where}: this map put {ratio:.1f}× "
            f"{'more' if ratio >= 1 else 'as much'} energy on {first} {'than' if ratio >= 1 else 'as'} a blind guess")
    text += "".join(f", {r:.1f}× on {name}" for name, r in rest)
    return text + "."
