"""appcore, the UI-independent core of both front ends: caches, targets, views, charts, examples, photos."""
from __future__ import annotations

import contextlib
import io
import json
import threading

import numpy as np
import pytest
from PIL import Image

from support import SIZE, fake_shipped, make_broken_model, make_tiny_models, put_in_hub_cache


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_models(tmp_path_factory.mktemp("core"))


@pytest.fixture(scope="module")
def photo():
    from fundus import make_fundus

    return make_fundus(SIZE, seed=8)[0]


@pytest.fixture(scope="module")
def analyser(tiny):
    from appcore import Analyser, ModelCache
    from appcore.catalogue import Catalogue

    # The tiny models are the operator's folders: offered (and loaded) by their folder names.
    return Analyser(ModelCache(capacity=2, catalogue=Catalogue([tiny["multilabel"], tiny["grade"]])), capacity=2)


def test_analysis_is_cached_per_image_model_and_target(analyser, tiny, photo):
    key = "tiny-lesions"
    passes = analyser.passes
    first = analyser.analyse(photo, key, "all predicted")
    assert analyser.analyse(photo.copy(), key, "all predicted") is first  # same pixels: same entry
    # For a multi-label model "predicted", "" and "all predicted" are one explanation: one entry.
    assert analyser.analyse(photo, key, "predicted") is first and analyser.analyse(photo, key, "") is first
    assert analyser.passes == passes + 1
    other = analyser.analyse(photo, key, "class:1")
    assert other is not first and other.explanation.targets[0] == [1]
    brighter = np.clip(photo.astype(int) + 1, 0, 255).astype(np.uint8)
    analyser.analyse(brighter, key, "all predicted")
    assert analyser.passes == passes + 3 and len(analyser.cache) == 2  # bounded LRU: the oldest went


def test_analysis_bytes_count_every_buffer_once_and_bound_the_cache(analyser, tiny, photo):
    from appcore import AnalysisCache
    from explain.pipeline import held_bytes

    a = analyser.analyse(photo, "tiny-lesions", "all predicted")
    size = a.nbytes
    # At least the display photo, the model's input tensor and the explanation's input and maps.
    assert size >= a.photo.nbytes + a.pre.tensor.numel() * 4 + a.pre.image.nbytes + sum(
        m.nbytes for m in a.maps(a.config.t).values())
    drawn = np.zeros((256, 256, 3), np.uint8)
    a.memo(("test picture",), lambda: drawn)
    assert a.nbytes == size + drawn.nbytes  # drawn pictures count
    view = drawn[10:20]
    assert held_bytes([drawn, view, {"again": drawn}]) == drawn.nbytes  # a view and a repeat: once
    b = analyser.analyse(np.clip(photo.astype(int) + 3, 0, 255).astype(np.uint8), "tiny-lesions", "all predicted")
    cache = AnalysisCache(capacity=10, max_mb=(a.nbytes + b.nbytes - 1) / 2**20)  # room for one of the two
    cache.put(a)
    cache.put(b)
    assert len(cache) == 1 and cache.get(b.key) is b and cache.get(a.key) is None  # the older one went
    tight = AnalysisCache(capacity=10, max_mb=1e-6)
    tight.put(a)
    assert tight.get(a.key) is a  # the newest stays, whatever its size
    with pytest.raises(ValueError, match="budget"):
        AnalysisCache(max_mb=0)


# passes=1 waits out its 2 s barrier timeout by design.
@pytest.mark.parametrize("passes", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_analyser_runs_at_most_passes_network_passes_at_once(tiny, photo, monkeypatch, passes):
    import appcore.analysis as core
    from appcore import Analyser, ModelCache
    from appcore.catalogue import Catalogue

    real = core.network_pass  # the one network pass (appcore.gpu), as the Analyser calls it
    inside, most, lock = [0], [0], threading.Lock()
    # Each pass waits for the other to come in too: with passes=2 both do; with passes=1 the second must wait
    # outside, so the first gives up after 2 s (without the limit both would meet here and ``most`` be 2).
    together = threading.Barrier(2, timeout=60 if passes == 2 else 2)

    def counted(*args, **kwargs):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            with contextlib.suppress(threading.BrokenBarrierError):
                together.wait()
            return real(*args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(core, "network_pass", counted)
    catalogue = Catalogue([tiny["multilabel"], tiny["grade"]])
    analyser = Analyser(ModelCache(capacity=2, catalogue=catalogue), capacity=4, passes=passes)
    jobs = [(photo, "tiny-lesions"), (photo, "tiny-grading")]  # two models: their own run locks allow overlap
    errors = []

    def run(rgb, key):
        try:
            analyser.analyse(rgb, key)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and analyser.passes == 2
    assert most[0] == passes


def test_analysis_rejects_bad_photos_and_targets(analyser, tiny, photo):
    key = "tiny-lesions"
    with pytest.raises(TypeError, match="uint8 RGB"):
        analyser.analyse(photo.astype(np.float32), key)
    with pytest.raises(ValueError, match="outside the model's 5 labels"):
        analyser.analyse(photo, key, "class:9")
    with pytest.raises(ValueError, match="multi-label"):
        analyser.analyse(photo, "tiny-grading", "all predicted")
    with pytest.raises(ValueError, match="unknown target"):
        analyser.analyse(photo, key, "everything")


def test_target_menu_follows_the_task(tiny):
    import zoo

    from fundus.tasks import task_of

    def menu(config):
        return task_of(config.task).target_menu(config.labels)

    multilabel = menu(zoo.load(str(tiny["multilabel"])).config)
    assert multilabel[0][1] == "all predicted" and ("HEX", "class:2") in multilabel
    assert [v for _, v in menu(zoo.load(str(tiny["grade"])).config)] == ["predicted"]


def test_views_follow_theta_and_tau_and_reuse_drawings(analyser, tiny, photo):
    from appcore import ViewParams, render_view

    analysis = analyser.analyse(photo, "tiny-lesions", "all predicted")
    views = {theta: render_view(analysis, ViewParams(theta=theta, tau=0.4, t=0.0)) for theta in (10, 128, 250)}
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in (views[t].regions["crop_box"] for t in (10, 128, 250))]
    assert areas[0] >= areas[1] >= areas[2] and areas[0] > areas[2]  # paper 000 eq. 5: higher θ, smaller box
    # θ only touches the Guided Grad-CAM panel and the crop: the other panels are the same drawings.
    assert views[10].panels["cam"] is views[250].panels["cam"]
    assert not np.array_equal(views[10].panels["guided_gradcam"], views[250].panels["guided_gradcam"])
    masks = [render_view(analysis, ViewParams(tau=tau, t=0.0)).regions["lesion_area_px"] for tau in (0.2, 0.5, 0.9)]
    assert masks[0] > masks[1] > masks[2]  # paper 004 eq. 4
    grid = views[128].grid()
    assert grid.shape[1] == 5 * SIZE and grid.dtype == np.uint8


def test_a_controls_event_sends_only_what_it_redraws(tiny, photo, tmp_path):
    from appcore import Analyser, ModelCache
    from appcore.catalogue import Catalogue
    from appcore.page import PICTURES, SKIP, VIEW_OUTPUTS, Page, redraw_outputs
    from explain.controls import BY_NAME, CONTROLS

    page = Page([tiny["multilabel"]], Analyser(ModelCache(capacity=1, catalogue=Catalogue([tiny["multilabel"]])),
                                              capacity=1, fundus_check=False), ([], 0))
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    values = {c.name: c.default for c in CONTROLS}
    source = page.photo(path, "tiny-lesions", "all predicted", *values.values())["session"]

    def moved(control, **changed):
        return page.redraw(control)(source, "tiny-lesions", "all predicted", *{**values, **changed}.values())

    # θ: its panel (Guided Grad-CAM, the default before/after panel), the crop, the before/after and the summaries;
    # no other picture is an output of its event at all.
    theta = moved("theta", theta=40)
    assert set(theta) == set(redraw_outputs("theta")) == set(VIEW_OUTPUTS) - (set(PICTURES) - BY_NAME["theta"].redraws())
    assert {"guided_gradcam", "crop"} <= set(theta) and not {"cam", "gradcam", "gmsm"} & set(theta)
    assert theta["regions"]["theta"] == 40 and theta["before_after"][1] is theta["guided_gradcam"]
    # The before/after shows another panel, which θ leaves as it is: left as it is too. Choosing it sends it.
    assert moved("theta", theta=50, compare="cam")["before_after"] is SKIP
    assert moved("compare", compare="cam")["before_after"][1] is not None
    assert moved("t", t=2.0)["before_after"] is SKIP and "gmsm" in moved("t", t=2.0)
    # A colour redraws every picture; the full redraw (None) sends every output of the view.
    assert set(PICTURES) <= set(moved("alpha", alpha=0.8)) and set(moved(None)) == set(VIEW_OUTPUTS)
    assert redraw_outputs(None) == VIEW_OUTPUTS


def test_unavailable_method_says_why(tmp_path, photo):
    import zoo

    from appcore import Analyser, ModelCache, ViewParams, render_view
    from appcore.catalogue import Catalogue

    folder = tmp_path / "no-cam"
    zoo.create_model("efficientnet_lite0", paper="003", task="multiclass", pretrained=False, input_size=SIZE,
                     cam=None, cam_reason="this head is not GAP + one linear layer").save_pretrained(folder)
    view = render_view(Analyser(ModelCache(catalogue=Catalogue([folder]))).analyse(photo, "no-cam"), ViewParams())
    assert view.captions["cam"] == "CAM — unavailable: this head is not GAP + one linear layer"
    assert view.panels["cam"].shape == (SIZE, SIZE, 3) and view.captions["gradcam"] == "Grad-CAM"


@pytest.mark.parametrize("bad", [dict(theta=256), dict(tau=1.5), dict(t=-1), dict(alpha=2), dict(colormap="rainbowz"),
                                 dict(compare="lime")])
def test_view_params_are_validated(bad):
    from appcore import ViewParams

    with pytest.raises(ValueError):
        ViewParams(**bad)


def test_prediction_chart_per_task():
    from appcore.charts import prediction_chart

    multilabel = prediction_chart({"task": "multilabel", "probabilities": {"HM": 0.7, "HEX": 0.2},
                                   "thresholds": {"HM": 0.5, "HEX": 0.3}, "predicted": ["HM"]})
    bars, marks = multilabel.data
    assert list(bars.y) == [0.7, 0.2] and list(marks.y) == [0.5, 0.3]  # thresholds marked per label
    assert bars.marker.color[0] != bars.marker.color[1]
    grade = prediction_chart({"task": "grade-regression", "value": 2.3, "grade": 2, "label": "Moderate",
                              "grade_cutoffs": [0.5, 1.5, 2.5, 3.5], "labels": ["No DR", "Mild", "Moderate", "Severe",
                                                                                 "PDR"]})
    assert grade.data[0].x[0] == 2.3 and len(grade.layout.shapes) == 4
    assert [a.text for a in grade.layout.annotations] == ["No DR", "Mild", "Moderate", "Severe", "PDR"]
    overruled = prediction_chart({"task": "multilabel", "probabilities": {"BP/MA": 0.03, "healthy": 0.96},
                                  "thresholds": {"BP/MA": 0.024, "healthy": 0.57}, "predicted": ["healthy"],
                                  "overruled": ["BP/MA"]})
    colours = list(overruled.data[0].marker.color)
    assert len(set(colours)) == 2 and colours[0] not in (bars.marker.color[0], bars.marker.color[1])
    with pytest.raises(ValueError, match="unknown task"):
        prediction_chart({"task": "segmentation"})


def test_model_catalogue_and_cache(tiny, monkeypatch, tmp_path):
    from appcore.catalogue import Catalogue, ModelCache, ModelUnavailable, available_models, parse_hub_id

    monkeypatch.setenv("FUNDUS_ZOO_ASSETS", str(tiny["grade"].parent))  # the tiny models as "shipped" ones
    monkeypatch.setenv("FUNDUS_ZOO_MODELS", "dr=someone/dr-grading@v2")
    menu = available_models([str(tiny["grade"]), "org/extra@v1"])
    # Grouped by paper (tiny-lesions: 001, the tiny graders: 003); within a paper the operator's models, then the
    # shipped ones; hub ids not downloaded yet (paper unknown) last. A listed folder is offered by its name (made
    # unique), never by its path.
    assert [(c.kind, c.key) for c in menu] == [("shipped", "tiny-lesions"), ("folder", "tiny-grading-2"),
                                               ("shipped", "tiny-grading"), ("hub", "org/extra@v1"), ("hub", "dr")]
    assert all(str(tmp_path) not in c.key and str(tmp_path) not in c.label for c in menu)
    assert parse_hub_id("org/name@main").revision == "main"
    with pytest.raises(ValueError, match="org/name"):
        parse_hub_id("not a model")
    with pytest.raises(ValueError, match="no config.json"):  # the operator's own mistake, at start-up
        Catalogue([str(tmp_path)])
    cache = ModelCache(capacity=1, catalogue=Catalogue([tiny["grade"]]))
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("tiny-grading-2"))) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert cache.loads == 1 and all(r[0] is results[0][0] for r in results)  # loaded once for 4 users
    with pytest.raises(ModelUnavailable, match="offline"):
        cache.get("nobody/nothing")


def test_the_menu_groups_models_by_paper_and_opens_on_the_dr_grade_classifier(tmp_path, monkeypatch):
    from appcore.catalogue import available_models
    from appcore.menu import default_choice

    papers = {"dr-grade-classifier": "003", "dr-grading": "004", "dr-lesions": "001", "eye-diseases": "002",
              "eye-diseases-ensemble": "000", "multi-disease": "", "odd": "042"}
    monkeypatch.setenv("FUNDUS_ZOO_ASSETS", str(fake_shipped(tmp_path / "assets", papers)))
    monkeypatch.setenv("FUNDUS_ZOO_MODELS", "org/not-downloaded")
    menu = available_models()
    # Papers in order (each from the model's own config), then an unknown paper id, then no paper, then unknown.
    assert [c.key for c in menu] == ["eye-diseases-ensemble", "dr-lesions", "eye-diseases", "dr-grade-classifier",
                                     "dr-grading", "odd", "multi-disease", "org/not-downloaded"]
    labels = {c.key: c.label for c in menu}
    # what a model answers comes first where its config has labels (these have none), the paper last
    assert labels["dr-grading"] == "dr-grading · paper 004"
    assert labels["dr-lesions"] == "dr-lesions · paper 001"
    assert labels["eye-diseases"] == "eye-diseases · paper 002"
    assert labels["odd"] == "odd · paper 042"
    assert labels["multi-disease"] == "multi-disease · no paper"
    assert labels["org/not-downloaded"] == "org/not-downloaded (hub)"
    assert len(set(labels.values())) == len(labels)  # one label per model
    assert default_choice(menu).key == "dr-grade-classifier"  # not the first in the menu
    # Without dr-grade-classifier: the first model that loads offline (never a hub download), whatever its name.
    monkeypatch.setenv("FUNDUS_ZOO_ASSETS", str(fake_shipped(tmp_path / "other", {"b": "", "a": "003"})))
    monkeypatch.setenv("FUNDUS_ZOO_MODELS", "x=org/cached-hub")
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "config.json").write_text(json.dumps({"name": "x", "paper": "000"}))
    put_in_hub_cache(tmp_path / "hub", "org/cached-hub", files=["config.json"])
    menu = available_models()
    assert [c.key for c in menu] == ["x", "a", "b"] and menu[0].label.endswith(" · paper 000")
    assert default_choice(menu).key == "a" and default_choice([]) is None


def test_only_offered_models_load_and_refusals_do_not_probe_the_disk(tiny, tmp_path, monkeypatch):
    from appcore.catalogue import Catalogue, ModelCache, ModelNotOffered, ModelUnavailable
    from appcore.presentation import error_message

    cache = ModelCache(capacity=2, catalogue=Catalogue([tiny["multilabel"]]))
    paths = [str(tiny["grade"]), str(tiny["grade"]) + "-absent", str(tiny["multilabel"]), "/etc", "/etc-absent",
             "../" + tiny["grade"].name, "./" + tiny["grade"].name]
    answers, shown = {}, {}
    for text in paths + ["~", "no such name"]:
        with pytest.raises(ModelNotOffered) as refused:
            cache.get(text)
        answers[text] = str(refused.value).replace(f"`{text}`", "`<text>`")
        shown[text] = error_message(refused.value)  # the page's status line
    assert len(set(answers.values())) == 1 and "not one of this app's models" in answers["/etc"]
    assert len({shown[text] for text in paths}) == 1  # one line for every path, existing or not
    assert all("config.json" not in a and str(tmp_path) not in a for a in shown.values())
    with pytest.raises(ModelNotOffered, match="No model is selected"):
        cache.get("")
    # Text of the hub id form is always a hub id, even where such a folder exists in the working dir.
    monkeypatch.chdir(tiny["grade"].parent.parent)
    relative = f"{tiny['grade'].parent.name}/{tiny['grade'].name}"
    with pytest.raises(ModelUnavailable, match="offline"):
        cache.get(relative)
    assert cache.loads == 0 and not cache._loading  # nothing loaded, no lock left behind per bogus key
    assert cache.get("tiny-lesions")[0].config.name == "tiny-lesions"


def test_failures_never_name_server_paths(tmp_path):
    from appcore.catalogue import Catalogue, ModelCache, ModelUnavailable
    from appcore.presentation import error_message
    from appcore.user_errors import UserInputError
    from fundus import ImageError

    broken = make_broken_model(tmp_path / "secret-folder" / "broken")
    with pytest.raises(ModelUnavailable) as failed:
        ModelCache(catalogue=Catalogue([broken])).get("broken")
    assert str(failed.value) == "Model `broken` could not be loaded: its files are missing or do not match its config."
    assert "secret-folder" in str(failed.value.__cause__)  # the log keeps the details
    # A path in a library's message is cut out of the status line; labels and URLs stay.
    assert error_message(ImageError(f"no such image file: {tmp_path}/x.png")) == "no such image file: …"
    assert error_message(UserInputError("BP/MA at https://huggingface.co/org/name")) == \
        "BP/MA at https://huggingface.co/org/name"
    assert error_message(KeyError("x")) is None  # unexpected: logged, not shown


def test_only_the_visitors_errors_are_shown_and_the_rest_is_logged(analyser, photo, caplog):
    """A ValueError from deep inside (a shape bug) is the server's, not the visitor's: logged with its traceback and
    shown as the generic line; the visitor's own errors (a bad target or control value, a rejected photo, a model
    that cannot be had) are shown as they are and not logged."""
    from appcore.page import view_params
    from appcore.presentation import INTERNAL_ERROR, message_of
    from appcore.user_errors import UserInputError, is_users
    from fundus import ImageError

    with pytest.raises(UserInputError, match="outside the model's 5 labels"):
        analyser.analyse(photo, "tiny-lesions", "class:9")
    with pytest.raises(UserInputError, match="unknown target"):
        analyser.analyse(photo, "tiny-lesions", "class:x")
    with pytest.raises(UserInputError, match="theta must be in"):
        view_params([999])
    with pytest.raises(ValueError) as bug:
        np.zeros((2, 3)) @ np.zeros((4, 5))
    assert not is_users(bug.value) and message_of(bug.value) == INTERNAL_ERROR
    assert [r.levelname for r in caplog.records] == ["ERROR"] and caplog.records[0].exc_info[1] is bug.value
    assert "Traceback" in caplog.text and "matmul" in caplog.text
    caplog.clear()
    assert message_of(UserInputError("theta must be in [0, 255]")) == "theta must be in [0, 255]"
    assert message_of(ImageError("the file is not a readable image")) == "the file is not a readable image"
    assert caplog.records == []  # the visitor's errors are not the server's problems


def test_download_folders_are_bounded(tmp_path):
    from appcore.views import DownloadFolders

    folders = DownloadFolders(keep=2, root=tmp_path)
    made = []
    for _ in range(5):
        made.append(folders.new())
        (made[-1] / "panels.png").write_bytes(b"png")
    assert [f.exists() for f in made] == [False, False, False, True, True] and len(folders) == 2
    assert sorted(tmp_path.iterdir()) == sorted(made[-2:])


def test_examples_are_generated_not_shipped(tmp_path):
    from appcore.examples import ensure_examples

    paths = ensure_examples(tmp_path, size=96)
    assert [p.name for p in paths][-1] == "skimage-retina-cc0.jpg" and len(paths) == 4
    images = [np.asarray(Image.open(p)) for p in paths]
    assert all(i.shape[1] == 96 and i.shape[2] == 3 for i in images)
    assert len({i.tobytes() for i in images}) == 4
    assert ensure_examples(tmp_path, size=96) == paths  # cached: written once


def test_photo_descriptions_and_rejections(tmp_path):
    from appcore.photos import PhotoRejected, describe_file, load_photo

    buffer = io.BytesIO()
    Image.new("I;16", (80, 70)).save(buffer, format="PNG")
    assert "16-bit grayscale" in describe_file(buffer.getvalue())
    assert load_photo(buffer.getvalue()).shape == (70, 80, 3)
    with pytest.raises(PhotoRejected, match="too small"):
        load_photo(_png((10, 10)))


def _png(size) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size).save(buffer, format="PNG")
    return buffer.getvalue()


# -- decision rules: no contradictions -------------------------------------------------------------------------

def _logits(probabilities):
    import torch

    p = torch.tensor(probabilities, dtype=torch.float64)
    return (torch.log(p) - torch.log1p(-p)).float()


@pytest.mark.parametrize("labels, no_disease", [
    (["BP/MA", "HM", "HEX", "CWS", "healthy"], "healthy"),  # dr-lesions (paper 001)
    (["normal", "DR", "maculopathy", "glaucoma"], "normal"),  # multi-disease
])
def test_a_no_disease_label_and_the_disease_labels_exclude_each_other(labels, no_disease):
    import zoo
    from zoo.model import decision_rule

    n = len(labels)
    k = labels.index(no_disease)
    thresholds = [0.06] * n  # above fundus.tasks.FINDING_FLOOR, so that the fitted thresholds decide
    thresholds[k] = 0.565
    model = zoo.create_model("efficientnet_lite0", paper="", task="multilabel", labels=labels, pretrained=False,
                             input_size=64, thresholds=thresholds)
    other = next(i for i in range(n) if i != k)
    rows = []
    for healthy_p, other_p in [(0.964, 0.08), (0.813, 0.30), (0.30, 0.97), (0.96, 0.99), (0.2, 0.01)]:
        row = [0.001] * n
        row[k], row[other] = healthy_p, other_p
        rows.append(row)
    decided = model.decide(_logits(rows)).tolist()
    raw = model.decide(_logits(rows), exclusive=False).tolist()
    for row, got, over in zip(rows, decided, raw):
        assert over == [p >= t for p, t in zip(row, thresholds)]  # exclusive=False: every label over its threshold
        assert not (got[k] and any(got[i] for i in range(n) if i != k))  # never both sides
        assert all(over[i] or not got[i] for i in range(n))  # nothing below its threshold is ever added
    # Both sides over their thresholds: the side further above its threshold in log-odds stays.
    assert decided[0][k] and not decided[0][other]  # healthy 96 % (t 57 %) beats 8 % (t 6 %)
    assert decided[1][other] and not decided[1][k]  # 30 % against 6 % is further above than 81 % against 57 %
    assert decided[2][other] and not decided[2][k]  # no conflict: the disease label alone
    assert decided[3][other] and not decided[3][k]
    assert not any(decided[4])  # nothing over its threshold: nothing decided
    rule = decision_rule(model.config)
    assert f"'{no_disease}' and the other labels" in rule and "log-odds" in rule


def test_models_without_a_no_disease_label_decide_by_threshold_alone():
    import torch
    import zoo
    from fundus.datasets.labels import no_disease_index
    from zoo.model import decision_rule

    model = zoo.create_model("efficientnet_lite0", paper="", task="multilabel", labels=["DR", "glaucoma", "AMD"],
                             pretrained=False, input_size=64, thresholds=[0.5, 0.2, 0.9])
    out = _logits([[0.6, 0.3, 0.5], [0.1, 0.1, 0.95]])
    assert model.decide(out).tolist() == [[True, True, False], [False, False, True]]
    assert no_disease_index(["healthy"]) is None and no_disease_index(["No DR", "Mild"]) == 0
    grader = zoo.create_model("efficientnet_lite0", paper="004", task="grade-regression", pretrained=False,
                              input_size=64)
    assert grader.decide(torch.tensor([[0.49], [1.51]])).tolist() == [0, 2]
    assert "exclude each other" in decision_rule(grader.config) and "0.5, 1.5, 2.5, 3.5" in decision_rule(grader.config)


# -- the main result line ------------------------------------------------------------------------------------

def test_the_main_result_says_how_sure_the_answer_is():
    from appcore.presentation import answer_line

    labels = ["No DR", "Mild", "Moderate", "Severe", "Proliferative DR"]
    grade = dict(task="grade-regression", grade_cutoffs=[0.5, 1.5, 2.5, 3.5], labels=labels)
    assert answer_line({**grade, "value": 1.53, "grade": 2, "label": "Moderate"}) == (
        "Moderate (grade 2)", "value 1.53, close to the 1.5 cut-off between Mild and Moderate: borderline")
    assert answer_line({**grade, "value": 2.1, "grade": 2, "label": "Moderate"})[1] == \
        "value 2.10, 0.40 below the 2.5 cut-off"
    assert answer_line({**grade, "value": 3.9, "grade": 4, "label": "Proliferative DR"})[1] == \
        "value 3.90, 0.40 above the 3.5 cut-off"
    answer, detail = answer_line({"task": "multiclass", "predicted": ["No DR"],
                                  "probabilities": {"No DR": 0.48, "Mild": 0.40, "Moderate": 0.12}})
    assert answer == "No DR" and detail == "probability 48 %; next: Mild 40 % — a close call"
    multilabel = {"task": "multilabel", "probabilities": {"BP/MA": 0.031, "HM": 0.001, "healthy": 0.964},
                  "thresholds": {"BP/MA": 0.024, "HM": 0.084, "healthy": 0.5653}}
    assert answer_line({**multilabel, "predicted": ["healthy"], "overruled": ["BP/MA"]}) == (
        "healthy 96 %", "threshold 57 %; overruled: microaneurysms (BP/MA) 3.1 % (threshold 2.4 %)")
    assert answer_line({**multilabel, "predicted": [], "overruled": []})[0] == "no label reached its threshold"


def test_a_photo_much_smaller_than_the_input_gets_a_low_resolution_note(analyser):
    from fundus import make_fundus

    from appcore.presentation import low_resolution_note, main_result

    small = analyser.analyse(make_fundus(80, seed=8)[0], "tiny-lesions", "all predicted")
    note = low_resolution_note(small)
    assert note.startswith("low resolution: the eye is") and f"input {SIZE} px" in note
    assert "low resolution" in main_result(small)
    full = analyser.analyse(make_fundus(SIZE, seed=8)[0], "tiny-lesions", "all predicted")
    assert low_resolution_note(full) == "" and "low resolution" not in main_result(full)


def test_the_model_card_is_lines_not_a_table(tiny):
    import zoo

    from appcore.presentation import card_markdown

    card = card_markdown(zoo.load(str(tiny["multilabel"])).config, "tiny-lesions")
    assert "|---|" not in card and "**Decision rule:**" in card and "**Thresholds:** BP/MA 50 %" in card
    assert "**Labels:** microaneurysms (BP/MA), haemorrhages (HM), hard exudates (HEX), cotton-wool spots (CWS), healthy" \
        in card and "Not for clinical use" in card


# -- the shipped example photos ------------------------------------------------------------------------------

def test_the_example_photos_are_real_small_credited_and_recognised():
    import hashlib
    import json

    from appcore.examples import EXAMPLES_DIR, shipped_examples
    from conftest import SHARED_DATA
    from fundus import check_fundus, load_image

    examples, start = shipped_examples()
    assert 1 <= len(examples) <= 8 and 0 <= start < len(examples)
    files = sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    assert files == sorted(e.path for e in examples)  # every photo listed, nothing else shipped
    assert sum(p.stat().st_size for p in files) <= 1.5 * 2**20
    for example in examples:
        with Image.open(example.path) as image:
            assert image.format == "JPEG" and max(image.size) <= 512
        assert check_fundus(load_image(example.path)).is_fundus
        assert example.caption and len(example.caption) <= 14 and example.known
        assert "CC BY 4.0" in example.credit
    known = " ".join(e.known for e in examples).lower()
    assert "healthy" in known and "glaucoma" in known and "exudate" in known
    credits = (EXAMPLES_DIR / "CREDITS.md").read_text()
    for words in ("HRF", "Budai", "IDRiD", "Porwal", "CC BY 4.0", "Cataract: no example", "DR grades are not known"):
        assert words in credits
    # Re-encoded, never byte copies of the shared data sets' files.
    if SHARED_DATA.is_dir():
        listing = json.loads((EXAMPLES_DIR / "examples.json").read_text())["examples"]
        for item in listing:
            original = SHARED_DATA / item["source"]
            if original.is_file():
                assert hashlib.sha256(original.read_bytes()).digest() != \
                    hashlib.sha256((EXAMPLES_DIR / item["file"]).read_bytes()).digest()


def test_before_after_puts_the_photo_left_of_the_handle():
    from appcore.views import before_after

    before, after = np.zeros((8, 100, 3), np.uint8), np.full((8, 100, 3), 100, np.uint8)
    picture = before_after((before, after), 0.3)
    assert (picture[:, :28] == 0).all() and (picture[:, 32:] == 100).all() and (picture[:, 29:31] == 255).all()
    assert (before_after((before, after), 1.0)[:, :98] == 0).all()  # the handle stays inside the picture
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        before_after((before, after), 1.5)
    with pytest.raises(ValueError, match="shape"):
        before_after((before, after[:4]), 0.5)


def test_downloads_in_memory_match_the_written_files(analyser, tiny, photo, tmp_path):
    from appcore.exports import downloads, write_downloads
    from appcore.views import ViewParams, render_view

    analysis = analyser.analyse(photo, tiny["multilabel"].name, "all predicted")
    params = ViewParams(theta=40)
    view = render_view(analysis, params)
    files = write_downloads(analysis, params, view, tmp_path, image_name="eye.jpg")
    made = downloads(analysis, params, view, image_name="eye.jpg")
    assert [p.name for p in files] == list(made) == ["eye-panels.png", "eye-maps.npy", "eye-view.json"]
    assert all(path.read_bytes() == make() for path, make in zip(files, made.values()))
