"""Data set loaders on the real folders in ../shared/data and on fixtures built in the official layouts."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import shared_dataset
from fundus import make_fundus
from fundus.datasets import (
    FORMATS,
    PAPER000_CATEGORIES,
    RFMID_DISEASES,
    DatasetError,
    ImageDataset,
    collate_skip_none,
    load_dataset,
    load_mask,
    patient_kfold,
    patient_split,
)

# ---------------------------------------------------------------- fixture helpers


def _photo(path: Path, seed: int = 0, size: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_fundus(size, seed=seed, lesions=())[0]).save(path)
    return path


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# ---------------------------------------------------------------- real data sets


def test_srahim_dr600_via_imagefolder_preset():
    root = shared_dataset("srahim-dr600")
    ds = load_dataset("imagefolder", root, preset="srahim-dr600")
    assert ds.task == "multiclass" and ds.labels[0] == "No DR" and len(ds.labels) == 5
    # README: 600 images, folder 10 (ADED, 7 images) has no grade.
    assert len(ds) == 593 and len(ds.excluded) == 7
    assert all("10 - ADED" in str(path) for path, _ in ds.excluded)
    assert ds.class_counts() == {"No DR": 276, "Mild": 72 + 27, "Moderate": 85 + 83, "Severe": 23 + 11,
                                 "Proliferative DR": 6 + 10}
    by_folder = {s.meta["folder"]: s for s in ds}
    assert by_folder["3 - Mild DR with maculopathy"].meta["maculopathy"] is True
    assert by_folder["2 - Mild DR without maculopathy"].meta["maculopathy"] is False
    assert by_folder["9 - PDR with maculopathy"].label == 4
    # Both eyes of a patient share the id.
    first = ds.samples[0]
    assert first.patient_id == first.image.stem.rsplit("_", 1)[0]
    assert sum(s.patient_id == first.patient_id for s in ds) == 2
    train, val = patient_split(ds.samples, 0.2, seed=0)
    assert not {s.patient_id for s in train} & {s.patient_id for s in val}
    assert len(train) + len(val) == len(ds)
    assert 0.15 < len(val) / len(ds) < 0.25
    # Stratified: every grade reaches validation.
    assert {s.label for s in val} == set(range(5))


def test_idrid_seg_dev_masks_and_labels():
    root = shared_dataset("idrid-seg-dev")
    ds = load_dataset("idrid-seg", root)
    assert len(ds) == 34 and ds.labels == ["MA", "HE", "EX", "SE"] and ds.task == "multilabel"
    counts = ds.class_counts()
    assert counts["SE"] == 19 and counts["HE"] == 33  # the README's numbers
    for sample in ds:
        for i, kind in enumerate(ds.labels):
            assert (sample.label[i] == 1) == (kind in sample.masks)
        assert "OD" in sample.masks
    mask = load_mask(ds.samples[0].masks["EX"])
    assert mask.dtype == np.bool_ and mask.shape == (512, 512) and 0 < mask.mean() < 0.2
    verified = load_dataset("idrid-seg", root / "A. Segmentation", verify_masks=True)
    np.testing.assert_array_equal(verified.targets(), ds.targets())


def test_diaretdb1_boxes_via_yolo():
    root = shared_dataset("diaretdb1-boxes")
    ds = load_dataset("yolo", root)
    assert len(ds) == 89 and ds.labels == ["optic_disc", "hard_exudates", "haemorrhage"]
    boxed = [s for s in ds if s.boxes]
    assert boxed
    for sample in boxed:
        for name, x0, y0, x1, y1 in sample.boxes:
            assert name in ds.labels and 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        present = {ds.labels.index(b[0]) for b in sample.boxes}
        assert set(np.nonzero(sample.label)[0]) == present
    # Cross-check one box against its raw line.
    sample = boxed[0]
    cls, cx, cy, w, h = Path(sample.meta["label_file"]).read_text().split("\n")[0].split()
    name, x0, y0, x1, y1 = sample.boxes[0]
    assert name == ds.labels[int(cls)] and x0 == pytest.approx(max(0.0, float(cx) - float(w) / 2))


def test_hrf_suffix_labels():
    root = shared_dataset("hrf")
    ds = load_dataset("hrf", root)
    assert len(ds) == 20 and ds.class_counts() == {"healthy": 6, "DR": 7, "glaucoma": 7}
    assert {s.image.stem.split("_")[1] for s in ds if s.label == 2} == {"g"}


# ---------------------------------------------------------------- generated official layouts


def test_aptos(tmp_path):
    rows = [["000c1434d8d7", 2], ["001639a390f0", 4], ["0024cdab0c1e", 1]]
    _write_csv(tmp_path / "train.csv", ["id_code", "diagnosis"], rows)
    for k, (code, _) in enumerate(rows):
        _photo(tmp_path / "train_images" / f"{code}.png", k)
    ds = load_dataset("aptos", tmp_path)
    assert [s.label for s in ds] == [2, 4, 1] and ds.labels[4] == "Proliferative DR"
    assert ds.samples[0].image == tmp_path / "train_images" / "000c1434d8d7.png"
    assert load_dataset("aptos", tmp_path, task="grade-regression").task == "grade-regression"
    _write_csv(tmp_path / "test.csv", ["id_code"], [["0005cfc8afb6"]])
    _photo(tmp_path / "test_images" / "0005cfc8afb6.png")
    test = load_dataset("aptos", tmp_path, split="test")
    assert test.samples[0].label is None and test.targets().tolist() == [-1]
    # Errors name the column / file.
    _write_csv(tmp_path / "train.csv", ["id_code", "grade"], rows)
    with pytest.raises(DatasetError, match="missing column 'diagnosis'"):
        load_dataset("aptos", tmp_path)
    _write_csv(tmp_path / "train.csv", ["id_code", "diagnosis"], rows + [["ffffffffffff", 0]])
    with pytest.raises(FileNotFoundError, match="ffffffffffff.png"):
        load_dataset("aptos", tmp_path)
    skipped = load_dataset("aptos", tmp_path, missing="skip")
    assert len(skipped) == 3 and skipped.excluded[0][0].name == "ffffffffffff.png"
    _write_csv(tmp_path / "train.csv", ["id_code", "diagnosis"], [["000c1434d8d7", 7]])
    with pytest.raises(DatasetError, match="row 2.*0–4"):
        load_dataset("aptos", tmp_path)


def test_aptos_reads_jpeg_and_keeps_near_duplicates_in_one_part(tmp_path):
    from fundus.datasets import train_val_test_split

    # The official set is PNG; a redistribution as JPEG. Photo "b" is photo "a" again, resized and re-encoded
    # (a near-duplicate of one eye); the others are different synthetic eyes.
    codes = [f"{k:012x}" for k in range(12)]
    _write_csv(tmp_path / "train.csv", ["id_code", "diagnosis"], [[c, k % 5] for k, c in enumerate(codes)])
    for k, code in enumerate(codes):
        _photo(tmp_path / "train_images" / f"{code}.jpg", seed=k, size=160)
    a = Image.open(tmp_path / "train_images" / f"{codes[0]}.jpg")
    a.resize((128, 128)).save(tmp_path / "train_images" / f"{codes[7]}.jpg", quality=70)
    ds = load_dataset("aptos", tmp_path)
    assert [s.image.suffix for s in ds] == [".jpg"] * 12 and ds.samples[3].image.stem == codes[3]
    assert ds.samples[7].patient_id == ds.samples[0].patient_id == codes[0]
    assert ds.samples[0].meta["duplicates"] == [codes[0], codes[7]]
    assert len({s.patient_id for s in ds}) == 11
    for seed in range(4):  # whatever the draw, the two copies share a part
        parts = train_val_test_split(ds.samples, seed=seed)
        part_of = {s.image.stem: part for part, samples in parts.items() for s in samples}
        assert part_of[codes[0]] == part_of[codes[7]]
    # Without grouping, each photo is its own patient; a PNG next to a JPEG is read first (the official name).
    assert len({s.patient_id for s in load_dataset("aptos", tmp_path, group_duplicates=False)}) == 12
    _photo(tmp_path / "train_images" / f"{codes[1]}.png", seed=1, size=160)
    assert load_dataset("aptos", tmp_path).samples[1].image.suffix == ".png"


def test_near_duplicate_groups_link_transitively():
    from fundus.datasets.duplicates import group_by_distance, group_sizes

    base = np.zeros(256, bool)
    near = base.copy()
    near[:8] = True  # 8 bits from base
    nearer = near.copy()
    nearer[8:16] = True  # 8 bits from near, 16 from base: linked through near
    far = ~base
    groups = group_by_distance(np.stack([base, far, near, nearer]), max_distance=10)
    assert groups.tolist() == [0, 1, 0, 0] and group_sizes(groups) == {1: 1, 3: 1}
    assert group_by_distance(np.stack([base, nearer]), max_distance=10).tolist() == [0, 1]


@pytest.mark.slow
def test_aptos2019_near_duplicates_on_the_real_photos():
    root = shared_dataset("aptos2019")
    ds = load_dataset("aptos", root)
    assert len(ds) == 3041 and {s.image.suffix for s in ds} == {".jpg"}
    groups = [s.meta["duplicates"] for s in ds if s.patient_id == s.image.stem and "duplicates" in s.meta]
    # The count `python -m fundus.datasets aptos ../shared/data/aptos2019` reports (docs: fundus.datasets.duplicates).
    assert len(groups) == 89 and sum(map(len, groups)) == 183


def test_eyepacs_5k_reads_as_eyepacs_split_by_patient():
    from fundus.datasets import train_val_test_split

    root = shared_dataset("eyepacs-5k")
    ds = load_dataset("eyepacs", root)
    assert len(ds) == 4516 and np.bincount(ds.targets()).tolist() == [2996, 406, 863, 140, 111]
    parts = train_val_test_split(ds.samples)
    patients = [{s.patient_id for s in parts[p]} for p in ("train", "val", "test")]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    assert sum(len(p) for p in parts.values()) == len(ds)


def test_eyepacs_patient_from_name(tmp_path):
    rows = [["10_left", 0], ["10_right", 1], ["13_left", 3], ["13_right", 2], ["15_left", 4]]
    _write_csv(tmp_path / "trainLabels.csv", ["image", "level"], rows)
    for k, (name, _) in enumerate(rows):
        _photo(tmp_path / "train" / f"{name}.jpeg", k)
    ds = load_dataset("eyepacs", tmp_path)
    assert [s.patient_id for s in ds] == ["10", "10", "13", "13", "15"]
    assert [s.meta["eye"] for s in ds] == ["left", "right", "left", "right", "left"]
    assert ds.targets().tolist() == [0, 1, 3, 2, 4]
    with pytest.raises(FileNotFoundError, match="retinopathy_solution.csv"):
        load_dataset("eyepacs", tmp_path, split="test")
    _write_csv(tmp_path / "trainLabels.csv", ["image", "level"], [["10", 0]])
    with pytest.raises(DatasetError, match="'10' is not '<patient>_left|right'"):
        load_dataset("eyepacs", tmp_path)


def test_idrid_grading_with_the_official_trailing_space(tmp_path):
    base = tmp_path / "B. Disease Grading"
    header = ["Image name", "Retinopathy grade", "Risk of macular edema ", "", ""]  # as in the archive
    rows = [["IDRiD_001", 3, 2, "", ""], ["IDRiD_002", 0, 0, "", ""], ["", "", "", "", ""]]
    _write_csv(base / "2. Groundtruths" / "a. IDRiD_Disease Grading_Training Labels.csv", header, rows)
    for k, name in enumerate(["IDRiD_001", "IDRiD_002"]):
        _photo(base / "1. Original Images" / "a. Training Set" / f"{name}.jpg", k)
    ds = load_dataset("idrid-grading", tmp_path)
    assert [s.label for s in ds] == [3, 0]
    assert [s.meta["macular_edema_risk"] for s in ds] == [2, 0]
    assert load_dataset("idrid-grading", base).samples[1].image.name == "IDRiD_002.jpg"
    _write_csv(base / "2. Groundtruths" / "b. IDRiD_Disease Grading_Testing Labels.csv",
               ["Image name", "Retinopathy grade", "Risk of macular edema "], [["IDRiD_001", 4, 1]])
    _photo(base / "1. Original Images" / "b. Testing Set" / "IDRiD_001.jpg")
    assert load_dataset("idrid-grading", tmp_path, split="test").samples[0].label == 4
    _write_csv(base / "2. Groundtruths" / "a. IDRiD_Disease Grading_Training Labels.csv",
               ["Image name", "Retinopathy grade"], [["IDRiD_001", 3]])
    with pytest.raises(DatasetError, match="'Risk of macular edema'"):
        load_dataset("idrid-grading", tmp_path)


def test_idrid_seg_generated_test_split(tmp_path):
    seg = tmp_path / "A. Segmentation"
    _photo(seg / "1. Original Images" / "b. Testing Set" / "IDRiD_55.jpg")
    truth = seg / "2. All Segmentation Groundtruths" / "b. Testing Set"
    folders = {"MA": "1. Microaneurysms", "HE": "2. Haemorrhages", "EX": "3. Hard Exudates",
               "SE": "4. Soft Exudates", "OD": "5. Optic Disc"}
    for folder in folders.values():
        (truth / folder).mkdir(parents=True)
    mask = np.zeros((64, 64), bool)
    mask[10:14, 10:14] = True
    Image.fromarray(mask).save(truth / folders["EX"] / "IDRiD_55_EX.tif")  # 1-bit TIFF
    Image.fromarray(np.zeros((64, 64), bool)).save(truth / folders["MA"] / "IDRiD_55_MA.tif")  # empty
    ds = load_dataset("idrid-seg", tmp_path, split="test")
    assert ds.samples[0].label.tolist() == [1, 0, 1, 0]
    verified = load_dataset("idrid-seg", tmp_path, split="test", verify_masks=True)
    assert verified.samples[0].label.tolist() == [0, 0, 1, 0]  # the empty MA mask is not a lesion
    (truth / folders["SE"]).rmdir()
    with pytest.raises(FileNotFoundError, match="4. Soft Exudates"):
        load_dataset("idrid-seg", tmp_path, split="test")


def _rfmid_row(image_id: int, diseases: set[str]) -> list[int]:
    return [image_id, int(bool(diseases))] + [int(d in diseases) for d in RFMID_DISEASES]


def test_rfmid_all_and_paper000_categories(tmp_path):
    assert len(RFMID_DISEASES) == 45 and len(PAPER000_CATEGORIES) == 28
    header = ["ID", "Disease_Risk"] + list(RFMID_DISEASES)
    assert len(header) - 1 == 46  # 46 label columns after ID, as in the issue
    rows = [_rfmid_row(1, {"DR", "MH"}), _rfmid_row(2, set()), _rfmid_row(3, {"CWS", "HPED"}), _rfmid_row(4, {"RP", "CL"})]
    _write_csv(tmp_path / "Training_Set" / "RFMiD_Training_Labels.csv", header, rows)
    for k in range(1, 5):
        _photo(tmp_path / "Training_Set" / "Training" / f"{k}.png", k)
    ds = load_dataset("rfmid", tmp_path)
    assert ds.labels == list(RFMID_DISEASES) and ds.targets().shape == (4, 45)
    assert ds.samples[0].label[RFMID_DISEASES.index("MH")] == 1 and ds.samples[0].meta["disease_risk"] == 1
    p28 = load_dataset("rfmid", tmp_path, categories="paper000")
    assert p28.labels[-1] == "Others" and p28.labels[:2] == ["DR", "ARMD"]
    t = p28.targets()
    assert t.shape == (4, 28)
    assert t[0, 0] == 1 and t[0, 2] == 1 and t[0, -1] == 0  # DR, MH
    assert t[1].sum() == 0
    assert t[2, -1] == 1 and t[2].sum() == 1  # CWS + HPED both → Others
    assert t[3, PAPER000_CATEGORIES.index("RP")] == 1 and t[3, -1] == 1
    _write_csv(tmp_path / "Evaluation_Set" / "RFMiD_Validation_Labels.csv", header, [_rfmid_row(9, {"ODC"})])
    _photo(tmp_path / "Evaluation_Set" / "Validation" / "9.png")
    assert load_dataset("rfmid", tmp_path, split="val").samples[0].label[RFMID_DISEASES.index("ODC")] == 1
    _write_csv(tmp_path / "Training_Set" / "RFMiD_Training_Labels.csv", header[:-1], [r[:-1] for r in rows])
    with pytest.raises(DatasetError, match="missing column 'CL'"):
        load_dataset("rfmid", tmp_path)


ODIR_HEADER = ["ID", "Patient Age", "Patient Sex", "Left-Fundus", "Right-Fundus", "Left-Diagnostic Keywords",
               "Right-Diagnostic Keywords", "N", "D", "G", "C", "A", "H", "M", "O"]
ODIR_ROWS = [
    [0, 69, "Female", "0_left.jpg", "0_right.jpg", "cataract", "normal fundus", 0, 0, 0, 1, 0, 0, 0, 0],
    [1, 57, "Male", "1_left.jpg", "1_right.jpg", "normal fundus", "normal fundus", 1, 0, 0, 0, 0, 0, 0, 0],
    [2, 42, "Male", "2_left.jpg", "2_right.jpg", "laser spot，moderate non proliferative retinopathy",
     "moderate non proliferative retinopathy", 0, 1, 0, 0, 0, 0, 0, 1],
]


def _odir_images(folder: Path) -> None:
    for k, row in enumerate(ODIR_ROWS):
        _photo(folder / row[3], 2 * k)
        _photo(folder / row[4], 2 * k + 1)


def test_odir_full_df_csv(tmp_path):
    root = tmp_path / "ODIR-5K"
    # Kaggle's full_df.csv: the patient row repeated per eye, plus extra columns.
    header = ODIR_HEADER + ["filepath", "labels", "target", "filename"]
    rows = [r + ["x", "['N']", "[1]", r[3]] for r in ODIR_ROWS] + [ODIR_ROWS[0] + ["x", "['C']", "[0]", "0_right.jpg"]]
    _write_csv(root / "full_df.csv", header, rows)
    _odir_images(root / "Training Images")
    ds = load_dataset("odir", tmp_path)
    assert len(ds) == 6 and ds.labels == ["N", "D", "G", "C", "A", "H", "M", "O"]
    left0 = ds.samples[0]
    assert left0.image.name == "0_left.jpg" and left0.meta == {"age": 69, "sex": "Female", "eye": "left",
                                                                "keywords": "cataract"}
    assert left0.label.tolist() == [0, 0, 0, 1, 0, 0, 0, 0]
    assert ds.samples[1].patient_id == ds.samples[0].patient_id == "0"
    assert ds.samples[5].label[1] == 1 and ds.samples[5].label[7] == 1
    train, val = patient_split(ds.samples, 0.34, seed=1)
    assert not {s.patient_id for s in train} & {s.patient_id for s in val}


def test_odir_official_xlsx(tmp_path):
    import pandas as pd

    pd.DataFrame(ODIR_ROWS, columns=ODIR_HEADER).to_excel(tmp_path / "data.xlsx", index=False)
    _odir_images(tmp_path / "Training Images")
    ds = load_dataset("odir", tmp_path)
    assert len(ds) == 6 and ds.samples[2].meta["age"] == 57 and ds.samples[2].label[0] == 1
    pd.DataFrame([r[:-1] for r in ODIR_ROWS], columns=ODIR_HEADER[:-1]).to_excel(tmp_path / "data.xlsx", index=False)
    with pytest.raises(DatasetError, match="missing column 'O'"):
        load_dataset("odir", tmp_path)


def test_imagefolder_with_mapping_and_errors(tmp_path):
    for k, (folder, name) in enumerate([("healthy", "a_L.png"), ("healthy", "a_R.png"), ("dr", "b_left.png"),
                                        ("ungradable", "c.png")]):
        _photo(tmp_path / folder / name, k)
    plain = load_dataset("imagefolder", tmp_path)
    assert plain.labels == ["dr", "healthy", "ungradable"] and len(plain) == 4
    ds = load_dataset("imagefolder", tmp_path, mapping={"healthy": "normal", "dr": "DR", "ungradable": None},
                      labels=["normal", "DR"])
    assert [(s.image.name, s.label, s.patient_id) for s in ds] == [("b_left.png", 1, "b"), ("a_L.png", 0, "a"),
                                                                    ("a_R.png", 0, "a")]
    assert ds.excluded[0][0].name == "c.png"
    with pytest.raises(DatasetError, match="'ungradable' has no entry"):
        load_dataset("imagefolder", tmp_path, mapping={"healthy": 0, "dr": 1}, labels=["normal", "DR"])
    with pytest.raises(DatasetError, match="unknown class 'DME'"):
        load_dataset("imagefolder", tmp_path, mapping={"healthy": 0, "dr": "DME", "ungradable": None},
                     labels=["normal", "DR"])
    with pytest.raises(FileNotFoundError, match="split folder not found"):
        load_dataset("imagefolder", tmp_path, split="val")


def test_yolo_labels_folder_layout(tmp_path):
    (tmp_path / "lesions.names").write_text("optic_disc\nhard_exudates\nhaemorrhage\n")
    _photo(tmp_path / "images" / "0001.jpg")
    _photo(tmp_path / "images" / "0002.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "0001.txt").write_text("2 0.5 0.5 0.2 0.1\n0 0.95 0.5 0.2 0.2\n")
    ds = load_dataset("yolo", tmp_path)
    first, second = ds.samples
    assert first.label.tolist() == [1, 0, 1] and second.label.tolist() == [0, 0, 0] and second.boxes == []
    assert first.boxes[0] == pytest.approx(("haemorrhage", 0.4, 0.45, 0.6, 0.55))
    assert first.boxes[1][3] == 1.0  # clipped to the image
    (tmp_path / "labels" / "0002.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError, match="0002.txt line 1: class 7"):
        load_dataset("yolo", tmp_path)
    (tmp_path / "labels" / "0002.txt").write_text("1 0.5 0.5\n")
    with pytest.raises(DatasetError, match="0002.txt line 1"):
        load_dataset("yolo", tmp_path)
    (tmp_path / "lesions.names").unlink()
    with pytest.raises(FileNotFoundError, match=".names"):
        load_dataset("yolo", tmp_path)


def test_registry_errors(tmp_path):
    assert {"aptos", "eyepacs", "idrid-grading", "idrid-seg", "rfmid", "odir", "imagefolder", "yolo",
            "hrf"} <= set(FORMATS)
    with pytest.raises(ValueError, match="unknown data set format 'kaggle'"):
        load_dataset("kaggle", tmp_path)
    with pytest.raises(FileNotFoundError, match="data set folder not found"):
        load_dataset("aptos", tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="train.csv"):
        load_dataset("aptos", tmp_path)


# ---------------------------------------------------------------- splits


def _samples(n_patients: int, seed: int = 0):
    from fundus.datasets import Sample

    rng = np.random.default_rng(seed)
    samples = []
    for p in range(n_patients):
        grade = int(rng.choice(5, p=[0.5, 0.2, 0.15, 0.1, 0.05]))
        for eye in ("L", "R")[: 1 + p % 2]:
            samples.append(Sample(Path(f"/x/P{p}_{eye}.jpg"), grade, patient_id=f"P{p}"))
    return samples


def test_patient_split_is_disjoint_stratified_and_reproducible():
    samples = _samples(200)
    train, val = patient_split(samples, 0.25, seed=3)
    assert not {s.patient_id for s in train} & {s.patient_id for s in val}
    assert len(train) + len(val) == len(samples)
    n_val_patients = len({s.patient_id for s in val})
    assert abs(n_val_patients - 50) <= 1
    for grade in range(5):
        total = len({s.patient_id for s in samples if s.label == grade})
        in_val = len({s.patient_id for s in val if s.label == grade})
        assert abs(in_val - 0.25 * total) <= 1.5, grade
    again = patient_split(samples, 0.25, seed=3)[1]
    other = patient_split(samples, 0.25, seed=4)[1]
    assert [s.image for s in again] == [s.image for s in val]
    assert {s.patient_id for s in other} != {s.patient_id for s in val}
    with pytest.raises(ValueError, match="val_fraction"):
        patient_split(samples, 1.0)


def test_patient_kfold_covers_every_patient_once():
    samples = _samples(60)
    folds = patient_kfold(samples, k=5, seed=0)
    assert len(folds) == 5
    seen = []
    for train, val in folds:
        assert not {s.patient_id for s in train} & {s.patient_id for s in val}
        assert len(train) + len(val) == len(samples)
        seen += [s.patient_id for s in val]
    assert sorted(set(seen)) == sorted({s.patient_id for s in samples})
    assert len(seen) == len(samples)  # each sample validated exactly once
    sizes = [len({s.patient_id for s in val}) for _, val in folds]
    assert max(sizes) - min(sizes) <= 1


def test_multilabel_split_keeps_rare_label_in_both_parts():
    from fundus.datasets import Sample

    samples = []
    for p in range(40):
        label = np.zeros(3, np.float32)
        label[0] = 1
        if p % 10 == 0:
            label[2] = 1  # rare: 4 patients
        samples.append(Sample(Path(f"/x/{p}.png"), label, patient_id=str(p)))
    train, val = patient_split(samples, 0.5, seed=0)
    assert sum(s.label[2] for s in val) == 2 and sum(s.label[2] for s in train) == 2


# ---------------------------------------------------------------- torch Dataset


def test_image_dataset_skips_and_counts_unreadable_images(tmp_path):
    import torch
    from torch.utils.data import DataLoader

    from fundus.datasets import Sample

    good = [_photo(tmp_path / f"{k}.png", k) for k in range(3)]
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    truncated = tmp_path / "cut.jpg"
    Image.fromarray(make_fundus(96, seed=1)[0]).save(truncated, quality=90)
    truncated.write_bytes(truncated.read_bytes()[:600])
    samples = [Sample(good[0], 1), Sample(tmp_path / "bad.png", 2), Sample(good[1], 0),
               Sample(truncated, 3), Sample(tmp_path / "gone.png", 0), Sample(good[2], np.array([1, 0], np.float32))]
    to_tensor = lambda rgb: torch.from_numpy(rgb).permute(2, 0, 1).float() / 255  # noqa: E731
    ds = ImageDataset(samples[:4], to_tensor)
    batches = list(DataLoader(ds, batch_size=4, collate_fn=collate_skip_none))
    x, y = batches[0]
    assert x.shape == (2, 3, 64, 64) and y.tolist() == [1, 0]
    assert ds.skipped == 2 and len(ds.skipped_paths) == 2
    # Worker processes add to the same counter.
    ds_workers = ImageDataset(samples[:5], to_tensor)
    list(DataLoader(ds_workers, batch_size=2, num_workers=2, collate_fn=collate_skip_none))
    assert ds_workers.skipped == 3
    assert collate_skip_none([None, None]) is None
    multi = ImageDataset(samples[5:])[0]
    assert multi[1].dtype == torch.float32 and multi[1].tolist() == [1.0, 0.0]
    assert isinstance(multi[0], np.ndarray) and multi[0].shape == (64, 64, 3)


# ---------------------------------------------------------------- CLI


def test_cli_summarises_and_counts_unreadable_photos(tmp_path, capsys):
    from fundus.datasets.__main__ import main

    rows = [["a1", 0], ["a2", 3]]
    _write_csv(tmp_path / "train.csv", ["id_code", "diagnosis"], rows)
    _photo(tmp_path / "train_images" / "a1.png")
    (tmp_path / "train_images" / "a2.png").write_bytes(b"broken")
    assert main(["aptos", str(tmp_path), "--read-images"]) == 0
    out = capsys.readouterr().out
    assert "aptos train: 2 photos of 2 patients" in out
    assert "Severe                   1" in out and "unreadable photos: 1" in out and "a2.png" in out
    assert main(["eyepacs", str(tmp_path)]) == 1
    assert "trainLabels.csv" in capsys.readouterr().err
