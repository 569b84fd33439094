"""The unlike-training indicator (zoo.ood) where the app, Streamlit and ``python -m explain`` show it: computed from the
explanation's own pass (no second forward), equal to zoo.predict's distance, a caution on the main result line for a
photo far from the training photos, the distance against the threshold in the details, nothing for a model without
a reference."""
from __future__ import annotations

import html
import io
import json

import pytest
from PIL import Image

from support import make_referenced_model, make_tiny_models, start_app, synthetic_photo, unlike_photo

LIKE_SEED, UNLIKE_SEED = 61, 62


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{"ood": a tiny model with a fitted reference, "plain": one without} saved in one folder."""
    folder = tmp_path_factory.mktemp("ood-models")
    return {"ood": make_referenced_model(folder), "plain": make_tiny_models(folder)["grade"]}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ood-photos")
    return {"like": synthetic_photo(folder, LIKE_SEED), "unlike": unlike_photo(folder, UNLIKE_SEED)}


def zoo_distance(model_folder, photo) -> dict:
    import zoo

    return zoo.predict(zoo.load(str(model_folder)), str(photo))[0]["unlike_training"]


@pytest.mark.slow
def test_the_analysis_reuses_its_one_pass_and_matches_zoo_predict(models, photos):
    import zoo
    from explain.pipeline import analyse, load_fundus_photo
    from appcore.presentation import main_result, preprocessing_markdown
    from zoo.ood import CAUTION

    model = zoo.load(str(models["ood"]))
    forwards = []
    model.register_forward_hook(lambda *_: forwards.append(1))
    seen = {}
    for kind, photo in photos.items():
        analysis = analyse(load_fundus_photo(photo)[0], model, "predicted")
        expected = zoo_distance(models["ood"], photo)
        assert analysis.unlike_training["distance"] == pytest.approx(expected["distance"], abs=1e-3)
        assert analysis.unlike_training["threshold"] == pytest.approx(expected["threshold"])
        assert analysis.prediction["unlike_training"] == analysis.unlike_training
        seen[kind] = analysis
    assert len(forwards) == 2  # one forward per photo: the explanation's own
    assert not seen["like"].unlike_training["unlike_training"] and seen["unlike"].unlike_training["unlike_training"]
    assert CAUTION not in html.unescape(main_result(seen["like"]))
    assert f"⚠️ {CAUTION}" in html.unescape(main_result(seen["unlike"]))
    far = seen["unlike"].unlike_training
    assert f"feature distance {far['distance']:.2f} > threshold {far['threshold']:.2f}" in preprocessing_markdown(seen["unlike"])
    assert "≤ threshold" in preprocessing_markdown(seen["like"])
    plain = analyse(load_fundus_photo(photos["unlike"])[0], zoo.load(str(models["plain"])), "predicted")
    assert plain.unlike_training is None and "unlike_training" not in plain.prediction
    assert CAUTION not in html.unescape(main_result(plain)) and "Unlike-training" not in preprocessing_markdown(plain)


@pytest.mark.slow
def test_the_gradio_app_shows_the_caution_and_the_distance(models, photos, tmp_path_factory, monkeypatch):
    from test_app import MAIN, PREDICTION, PREPROCESSING, analyse, model_key, new_client
    from zoo.ood import CAUTION

    tmp = tmp_path_factory.mktemp("ood-app")
    monkeypatch.setenv("FUNDUS_ZOO_ASSETS", str(tmp / "no-assets"))
    monkeypatch.setenv("FUNDUS_APP_CACHE", str(tmp / "cache"))
    demo, url = start_app(tmp, [models["ood"], models["plain"]])
    try:
        client = new_client(url, tmp)
        key = model_key(demo, "tiny-ood")
        like, unlike = (analyse(client, photos[kind], key) for kind in ("like", "unlike"))
        assert CAUTION not in html.unescape(like[MAIN]) and "≤ threshold" in like[PREPROCESSING]
        assert f"⚠️ {CAUTION}" in html.unescape(unlike[MAIN])
        far = unlike[PREDICTION]["unlike_training"]
        assert far["unlike_training"] and f"feature distance {far['distance']:.2f} > threshold" in unlike[PREPROCESSING]
        assert far["distance"] == pytest.approx(zoo_distance(models["ood"], photos["unlike"])["distance"], abs=1e-3)
        assert like[PREDICTION]["unlike_training"]["distance"] == pytest.approx(
            zoo_distance(models["ood"], photos["like"])["distance"], abs=1e-3)
        plain = analyse(client, photos["unlike"], model_key(demo, "tiny-grading"))
        assert CAUTION not in html.unescape(plain[MAIN]) and "unlike_training" not in plain[PREDICTION]
        assert "Unlike-training" not in plain[PREPROCESSING]
    finally:
        demo.close()


@pytest.mark.slow
def test_streamlit_shows_the_caution_and_the_distance(models, photos, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from test_streamlit_app import REPO, pick_model
    from zoo.ood import CAUTION

    monkeypatch.setenv("FUNDUS_ZOO_ASSETS", str(models["ood"].parent))  # the tiny models stand in for the shipped
    monkeypatch.setenv("FUNDUS_APP_CACHE", str(tmp_path / "cache"))
    import streamlit as st

    st.cache_resource.clear()
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120)
    at.run()

    def shown(kind: str, model: str) -> str:
        pick_model(at, model)
        data = io.BytesIO()
        Image.open(photos[kind]).save(data, format="PNG")
        at.file_uploader(key="upload").set_value((f"{kind}.png", data.getvalue(), "image/png")).run()
        assert not at.exception and not at.error, (at.exception, at.error)
        return html.unescape("\n".join(m.value for m in at.markdown))

    like, unlike = shown("like", "tiny-ood"), shown("unlike", "tiny-ood")
    assert CAUTION not in like and "≤ threshold" in like
    far = zoo_distance(models["ood"], photos["unlike"])
    assert f"⚠️ {CAUTION}" in unlike and f"feature distance {far['distance']:.2f} > threshold" in unlike
    plain = shown("unlike", "tiny-grading")
    assert CAUTION not in plain and "Unlike-training" not in plain


@pytest.mark.slow  # over ~1 s (a child process, real photos or ROAD): out of the quick loop
def test_python_m_explain_json_reports_it_as_zoo_predict_does(models, photos, tmp_path, capsys):
    from explain.cli import main
    from zoo.ood import CAUTION

    out = tmp_path / "out"
    assert main([str(models["ood"]), str(photos["like"]), str(photos["unlike"]), "--methods", "gradcam",
                 "--out", str(out)]) == 0
    for kind, photo in photos.items():
        prediction = json.loads((out / f"{photo.stem}_prediction.json").read_text())["prediction"]
        expected = zoo_distance(models["ood"], photo)
        assert prediction["unlike_training"]["distance"] == pytest.approx(expected["distance"], abs=1e-3)
        assert prediction["unlike_training"]["unlike_training"] is (kind == "unlike") is expected["unlike_training"]
        assert any(CAUTION in w for w in prediction["warnings"]) is (kind == "unlike")
    assert CAUTION in capsys.readouterr().err
    # The same folder again: --overwrite replaces this photo's earlier outputs (without it the folder is refused),
    # so the file read below is the plain model's, which has no unlike-training indicator.
    assert main([str(models["plain"]), str(photos["unlike"]), "--methods", "gradcam", "--out", str(out),
                 "--overwrite"]) == 0
    assert "unlike_training" not in json.loads((out / f"{photos['unlike'].stem}_prediction.json").read_text())["prediction"]


def test_python_m_explain_joins_the_content_distance_by_zoo_predict_s_rule(models, photos, tmp_path):
    """For a model trained on the content reference's sources the JSON's verdict joins the content distance the
    fundus check measured (``zoo.ood.with_content_verdicts``, as zoo.predict and the app): a generated photo, like
    the model's own training photos, is unlike real fundus photos."""
    import shutil

    import zoo
    from explain.cli import main
    from zoo.config import ModelConfig

    folder = shutil.copytree(models["ood"], tmp_path / "tiny-ood-on-eyepacs")
    config = ModelConfig.load(folder / "config.json")
    config.datasets = ["eyepacs-1k"]
    config.save(folder / "config.json")
    assert main([str(folder), str(photos["like"]), "--methods", "gradcam", "--out", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / f"{photos['like'].stem}_prediction.json").read_text())
    verdict = record["prediction"]["unlike_training"]
    expected = zoo.predict(zoo.load(str(folder)), str(photos["like"]))[0]["unlike_training"]
    assert verdict["flagged_by"] == expected["flagged_by"] == ["content"] and verdict["unlike_training"]
    assert verdict["content_distance"] == pytest.approx(expected["content_distance"], abs=1e-3)
    assert verdict["content_distance"] == pytest.approx(record["fundus_check"]["content_distance"], abs=1e-4)
    assert any("content distance" in w for w in record["prediction"]["warnings"])
