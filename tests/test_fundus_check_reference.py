"""The unlike-training indicator's model-independent distance (zoo.fundus_check_reference): a probabilistic-PCA
Mahalanobis distance in the fundus check's content features, fitted on real fundus photos only; either it or the
model's own distance (zoo.ood) flags a photo, and the result says which. On real data: it fires on not-fundus photos
that a shipped model classifies anyway, and not on most held-out real photos."""
from __future__ import annotations

import json
import tomllib
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import REPO, SHARED_DATA, shared_dataset
from zoo.fundus_check_reference import (REFERENCE_FILE, fit_content_reference, read_reference, reference_from_json,
                                        shipped_reference, write_reference)

FEATURES, SPREAD_AXES = 40, 4


def _photos(rng, n):
    """Generated "fundus" features: most of the spread along a few directions, a little noise in all others."""
    basis = np.linalg.qr(np.random.default_rng(7).normal(size=(FEATURES, FEATURES)))[0][:SPREAD_AXES]
    return 3.0 + rng.normal(size=(n, SPREAD_AXES)) * [5.0, 4.0, 3.0, 2.0] @ basis + rng.normal(0, 0.3, (n, FEATURES))


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    fit, held_out = _photos(rng, 600), _photos(rng, 2000)
    return fit, held_out, fit_content_reference(fit, held_out, axes=SPREAD_AXES, quantile=0.95,
                                                sources=("eyepacs-1k",), about={"fitted_by": "a test"})


def test_the_distance_is_mahalanobis_under_the_probabilistic_pca_covariance(fitted):
    fit, _held_out, ref = fitted
    variance = np.linalg.eigvalsh(np.cov(fit.T))[::-1]
    assert ref.axis_variance == pytest.approx(variance[:SPREAD_AXES], rel=1e-5)
    assert ref.rest_variance == pytest.approx(variance[SPREAD_AXES:].mean(), rel=1e-5)
    # The covariance written out in full: the kept axes with their variances, one variance for every other direction.
    outside = np.eye(FEATURES) - ref.axes.T @ ref.axes
    covariance = ref.axes.T @ np.diag(ref.axis_variance) @ ref.axes + ref.rest_variance * outside
    x = _photos(np.random.default_rng(5), 3) + np.random.default_rng(6).normal(0, 1, (3, FEATURES))
    centred = x - ref.mean
    expected = np.sqrt(np.einsum("ij,jk,ik->i", centred, np.linalg.inv(covariance), centred) / FEATURES)
    assert ref.distance(x) == pytest.approx(expected, rel=1e-4)


def test_the_threshold_is_the_held_out_quantile_and_a_step_off_the_photos_directions_is_flagged(fitted):
    _fit, held_out, ref = fitted
    assert (ref.distance(held_out) > ref.threshold).mean() == pytest.approx(0.05, abs=0.002)
    along, across = ref.axes[0], np.linalg.qr(np.c_[ref.axes.T, np.ones(FEATURES)])[0][:, -1]
    step = 4 * np.sqrt(ref.rest_variance * FEATURES)  # small beside the spread of the photos' own directions
    assert ref.distance(ref.mean + step * along) < ref.threshold < ref.distance(ref.mean + step * across)
    assert [v["content_unlike"] for v in (ref.verdict(ref.threshold), ref.verdict(ref.threshold + 1e-9))] == [False, True]


def test_fitting_refuses_bad_arguments(fitted):
    fit, held_out, _ref = fitted
    with pytest.raises(ValueError, match="quantile"):
        fit_content_reference(fit, held_out, axes=4, quantile=1.0)
    with pytest.raises(ValueError, match="axes"):
        fit_content_reference(fit[:5], held_out, axes=4)
    with pytest.raises(ValueError, match="feature sizes"):
        fit_content_reference(fit, held_out[:, :10], axes=4)


def test_the_json_file_round_trips_and_bad_files_are_refused(fitted, tmp_path):
    _fit, held_out, ref = fitted
    path = write_reference(ref, tmp_path / "reference.json")
    back = read_reference(path)
    assert back.distance(held_out) == pytest.approx(ref.distance(held_out), rel=1e-6)  # fitted as it is stored
    assert (back.threshold, back.quantile, back.sources, back.about) == (ref.threshold, 0.95, ("eyepacs-1k",),
                                                                          {"fitted_by": "a test"})
    data = json.loads(path.read_text())
    for broken, match in ((dict(data, axes=data["axes"][:-1]), "axis numbers"), (dict(data, rest_variance=0), "variances"),
                          ({k: v for k, v in data.items() if k != "threshold"}, "lacks threshold")):
        with pytest.raises(ValueError, match=match):
            reference_from_json(broken)
    data["mean"][0] = float("nan")
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="non-finite"):
        read_reference(path)


def test_it_speaks_only_for_models_trained_on_its_sources(fitted):
    ref = fitted[2]
    assert ref.applies_to(SimpleNamespace(datasets=["odir-ngc", "eyepacs-1k"]))
    assert not ref.applies_to(SimpleNamespace(datasets=[])) and not ref.applies_to(SimpleNamespace(datasets=["rfmid"]))


def test_either_distance_flags_a_photo_and_the_warning_says_which():
    from zoo.ood import CAUTION, warning, with_content

    def model(far):
        return {"distance": 2.0 if far else 1.0, "threshold": 1.5, "unlike_training": far,
                "flagged_by": ["model"] if far else []}

    def content(far):
        return {"content_distance": 3.0 if far else 1.0, "content_threshold": 1.5, "content_unlike": far}

    seen = {(m, c): with_content(model(m), content(c)) for m in (False, True) for c in (False, True)}
    assert {k: v["flagged_by"] for k, v in seen.items()} == {
        (False, False): [], (False, True): ["content"], (True, False): ["model"], (True, True): ["model", "content"]}
    assert {k: v["unlike_training"] for k, v in seen.items()} == {k: any(k) for k in seen}
    assert seen[False, True]["content_distance"] == 3.0 and seen[False, True]["content_threshold"] == 1.5
    assert warning(seen[False, False]) == ""
    assert "content distance 3.00 > 1.50" in warning(seen[False, True]) and "feature distance" not in warning(seen[False, True])
    assert CAUTION in warning(seen[True, True]) and "feature distance 2.00 > 1.50" in warning(seen[True, True])
    assert with_content(model(False), None) == model(False)  # the reference does not speak for this model


def test_the_app_joins_the_check_s_distance_and_shows_both(fitted, monkeypatch):
    from explain.pipeline import with_content_distance
    from appcore.presentation import unlike_training_details
    from fundus.check import FundusCheck
    from zoo.fundus_check import content_verdicts

    ref = fitted[2]
    stub = SimpleNamespace(reference=ref, features=lambda photos: pytest.fail("the check's distance is reused"))
    config = SimpleNamespace(datasets=["eyepacs-1k"])
    checks = [FundusCheck(True, "", True, False, "photo", {"content_distance": d}) for d in (0.5, 9.0)]
    verdicts = content_verdicts(config, [None, None], checks, model=stub)
    assert [v["content_unlike"] for v in verdicts] == [False, True]
    assert content_verdicts(SimpleNamespace(datasets=[]), [None], checks[:1], model=stub) is None

    own = {"distance": 1.0, "threshold": 1.5, "unlike_training": False, "flagged_by": []}
    analysis = SimpleNamespace(config=config, unlike_training=dict(own), prediction={"unlike_training": dict(own)})
    monkeypatch.setattr("zoo.fundus_check.shipped_reference", lambda: ref)
    monkeypatch.setattr("zoo.fundus_check.content_model", lambda: pytest.fail("the check's distance is reused"))
    with_content_distance(analysis, np.zeros((8, 8, 3), np.uint8), checks[1])
    assert analysis.prediction["unlike_training"] is analysis.unlike_training
    assert analysis.unlike_training["unlike_training"] and analysis.unlike_training["flagged_by"] == ["content"]
    details = unlike_training_details(analysis)
    assert "feature distance 1.00 ≤ threshold 1.50" in details and f"content distance 9.00 > threshold {ref.threshold:.2f}" in details


@pytest.mark.slow  # over ~1 s (a child process, real photos or ROAD): out of the quick loop
def test_zoo_predict_adds_the_content_distance_for_a_model_trained_on_its_sources(tmp_path):
    """A generated photo is like the generated photos a tiny model was fitted on (its own distance), but unlike real
    fundus photos (the content distance): flagged once the model's data sets are the reference's."""
    import zoo
    from fundus import make_fundus
    from support import make_referenced_model

    model = zoo.load(str(make_referenced_model(tmp_path)))
    rgb = make_fundus(96, seed=61)[0]
    alone = zoo.predict(model, rgb)[0]["unlike_training"]
    assert not alone["unlike_training"] and "content_distance" not in alone  # trained on no source of the reference
    model.config.datasets = ["eyepacs-1k"]
    result = zoo.predict(model, rgb)[0]
    joined = result["unlike_training"]
    assert joined["distance"] == pytest.approx(alone["distance"]) and joined["flagged_by"] == ["content"]
    assert joined["content_distance"] > joined["content_threshold"] == shipped_reference().threshold
    assert any("content distance" in w for w in result["warnings"])
    # A fundus check already made (python -m zoo predict checks first) lends its distance: no second content pass.
    from fundus.check import FundusCheck

    check = FundusCheck(True, "", True, False, "photo", {"content_distance": 0.25})
    reused = zoo.predict(model, rgb, checks=[check])[0]["unlike_training"]
    assert reused["content_distance"] == 0.25 and reused["flagged_by"] == []
    with pytest.raises(ValueError, match="one fundus check per photo"):
        zoo.predict(model, [rgb, rgb], checks=[check])


def test_the_shipped_reference_is_small_plain_packaged_and_measured():
    assert REFERENCE_FILE.stat().st_size < 1_000_000
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["zoo"]
    assert REFERENCE_FILE.name in package_data
    ref = shipped_reference()
    assert ref.mean.size == 1280 and ref.quantile == 0.99 and {"eyepacs-1k", "odir-ngc", "aptos2019"} <= set(ref.sources)
    measured = ref.about["measured"]
    flagged, photos = measured["held_out_flagged_two_fold"]
    assert photos > 1000 and flagged / photos < 0.03
    assert set(measured["lookalikes_flagged"]) == {"dermoscopy", "endoscopy", "eye-surface", "microscopy", "natural"}


@pytest.mark.slow  # ~10 s of real photos: kept out of the sub-minute `-m "not slow"` loop
def test_on_real_photos_it_fires_on_lookalikes_a_model_classifies_and_not_on_held_out_fundus_photos():
    """eye-diseases' own distance flagged 0 of 125 lookalikes (docs/MODELS.md); with the content distance it must
    flag them, and few held-out real photos (the check part of scripts/fit_fundus_check.py: nothing fitted on them)."""
    import random

    import zoo
    from fundus import load_image

    from test_zoo_fundus_check import _photos as photos_of

    lookalikes = shared_dataset("not-fundus")
    rng = random.Random(0)
    not_fundus = [p for kind in sorted(lookalikes.iterdir()) for p in rng.sample(photos_of(kind), 4)]
    held_out = []
    for folder in ("eyepacs-1k", "odir-ngc", "aptos2019", "srahim-dr600", "idrid-grading-boxes"):
        found = [p for p in photos_of(shared_dataset(folder)) if _part(p) == "check"]
        held_out += rng.sample(found, 8)
    model = zoo.load("eye-diseases")
    if not model.config.ood:
        pytest.skip("the shipped eye-diseases has no unlike-training reference")
    verdicts = {kind: [r["unlike_training"] for r in zoo.predict(model, [load_image(p) for p in paths], batch_size=10)]
                for kind, paths in (("not fundus", not_fundus), ("fundus", held_out))}
    assert all("content" in v["flagged_by"] for v in verdicts["not fundus"]), [
        (p.parent.name, round(v["content_distance"], 2)) for p, v in zip(not_fundus, verdicts["not fundus"])]
    assert sum(v["unlike_training"] for v in verdicts["fundus"]) <= 2, [v for v in verdicts["fundus"] if v["unlike_training"]]


def _part(path) -> str:
    """scripts/fit_fundus_check.py's part (its part_of) of a photo of ../shared/data ("fit" or "check")."""
    import hashlib

    digest = int(hashlib.md5(str(path.relative_to(SHARED_DATA)).encode()).hexdigest()[:8], 16)
    return "fit" if digest % 1000 < 600 else "check"
