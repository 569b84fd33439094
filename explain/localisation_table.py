"""The localisation table of ``python -m explain evaluate``: per (model, method, lesion) the energy pointing game,
its ratio to the best trivial map, the pointing game, the PR-AUC and ROAD, as JSON, CSV and Markdown; and the
per-model ``ModelConfig.localisation`` entry it writes (read back by ``zoo.localisation``)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from explain.metrics import OPTIC_DISC
from explain.spot_filter import SPOT_FILTER

TRIVIAL = ("baseline-uniform", "baseline-gaussian")  # maps that know nothing of the photo: the blind guess
COLUMNS = ("model", "method", "lesion", "photos", "energy_pointing_game", "epg_ratio", "blind_guess",
           "pointing_game", "pr_auc", "road", "data", "format", "split")
TABLE_NAME = "localisation"  # --table DIR gets localisation.json, .csv and .md


def table_rows(model: str, result: dict, road: dict[str, float | None], *, data: str, fmt: str,
               split: str) -> list[dict]:
    """One row per (method, lesion) of one model's ``LocalisationSummary.result``; ``road``: method -> mean
    ROADCombined (``explain.faithfulness``; None or absent: not measured). ``epg_ratio`` is the method's energy
    pointing game over the higher of the trivial maps' on the same lesion (``blind_guess`` names it)."""
    lesions = sorted({lesion for rows in result.values() for lesion in rows if lesion != OPTIC_DISC})
    best = {}
    for lesion in lesions:
        trivial = [(result[name][lesion]["energy_pointing_game"], name) for name in TRIVIAL
                   if lesion in result.get(name, {})]
        best[lesion] = max(trivial) if trivial else (None, None)
    rows = []
    for method, per_lesion in result.items():
        for lesion in lesions:
            row = per_lesion.get(lesion)
            if row is None:
                continue
            blind, blind_name = best[lesion]
            epg = row["energy_pointing_game"]
            rows.append({"model": model, "method": method, "lesion": lesion, "photos": row["images"],
                         "energy_pointing_game": epg, "epg_ratio": epg / blind if blind else None,
                         "blind_guess": blind_name, "pointing_game": row["pointing_game"], "pr_auc": row["pr_auc"],
                         "road": road.get(method), "data": data, "format": fmt, "split": split})
    return rows


def _cell(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table, "N× the best trivial map" beside each energy pointing game."""
    lines = ["| model | map | lesion | photos | EPG | × best trivial map | PG | PR-AUC | ROAD |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ratio = "—" if row["epg_ratio"] is None else f"{row['epg_ratio']:.1f}×"
        lines.append(f"| {row['model']} | {row['method']} | {row['lesion']} | {row['photos']} | "
                     f"{_cell(row['energy_pointing_game'])} | {ratio} | {_cell(row['pointing_game'], 2)} | "
                     f"{_cell(row['pr_auc'])} | {_cell(row['road'])} |")
    return "\n".join(lines)


def csv_text(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_table(rows: list[dict], folder: Path, note: str = "") -> list[Path]:
    """``localisation.json`` (the rows), ``.csv`` and ``.md`` (``note`` above the table) in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{TABLE_NAME}.{ext}" for ext in ("json", "csv", "md")]
    paths[0].write_text(json.dumps(rows, indent=1) + "\n")
    paths[1].write_text(csv_text(rows))
    paths[2].write_text((f"{note}\n\n" if note else "") + markdown_table(rows) + "\n")
    return paths


def config_entry(rows: list[dict], titles: dict[str, str]) -> dict:
    """One model's ``ModelConfig.localisation``: {method: {title, data, format, split, photos, road, lesions:
    {lesion: {epg, epg_ratio, blind_guess, pointing_game, pr_auc}}}} for every method and the spot filter (the
    trivial maps are the ratios' denominators, not entries). ``photos``: the most photos any lesion was scored on."""
    entry: dict[str, dict] = {}
    for row in rows:
        if row["method"] in TRIVIAL:
            continue
        method = entry.setdefault(row["method"], {
            "title": titles.get(row["method"], row["method"]), "data": row["data"], "format": row["format"],
            "split": row["split"], "photos": 0, "road": row["road"], "lesions": {}})
        method["photos"] = max(method["photos"], row["photos"])
        method["lesions"][row["lesion"]] = {
            "epg": round(row["energy_pointing_game"], 4),
            "epg_ratio": None if row["epg_ratio"] is None else round(row["epg_ratio"], 3),
            "blind_guess": row["blind_guess"], "pointing_game": round(row["pointing_game"], 4),
            "pr_auc": round(row["pr_auc"], 4)}
    if SPOT_FILTER in entry:  # last, after the model's own maps
        entry[SPOT_FILTER] = entry.pop(SPOT_FILTER)
    return entry


def write_config(folder: Path, entry: dict) -> Path:
    """Set the ``localisation`` field of the model folder's ``config.json`` (the other fields as they are), and
    rewrite its card (``README.md``) where it has one, so that the card shows the table."""
    from zoo.card import write_card
    from zoo.config import ModelConfig

    path = Path(folder) / "config.json"
    config = ModelConfig.load(path)
    config.localisation = entry
    config.save(path)
    if (Path(folder) / "README.md").is_file():
        write_card(config, Path(folder) / "README.md")
    return path
