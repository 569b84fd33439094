"""Fundus CAM Zoo — the Streamlit front end, on the same core as the Gradio app (appcore).

    streamlit run streamlit_app.py --server.headless true --browser.gatherUsageStats false \
        --server.fileWatcherType none

Upload a photo (or pick an example), pick a model, and see CAM | Grad-CAM | Guided Grad-CAM | GMSM with
the θ attention crop and the τ lesion mask. As in the Gradio app: the model menu grouped by paper (opening on
dr-grade-classifier), a model from a Hugging Face hub repo id (this session's menu only; offline, only what the hub
cache holds), a before/after view of the photo and a chosen panel's overlay, and the downloads (panels PNG,
raw maps .npy, view JSON). Research tool, not a medical device: not for clinical use.

Streamlit reruns this script on every widget change. What a slider does not change is cached across
reruns, as the Gradio app does: the decoded photo (``st.cache_resource``, by the file's hash) and the
analysis (one network pass per photo, model and target: ``st.cache_resource`` over ``Analyser``'s own
LRU). A photo that is not a fundus photograph gets the fundus check's message and no classification.
Picking another model resets θ, τ and t to that model's defaults. The toolbar's developer items
(Deploy, Rerun, Clear cache) are hidden: ``client.toolbarMode = "minimal"`` (here and in
``.streamlit/config.toml``).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from appcore import server  # imports nothing heavy

server.prepare_process()  # as the Gradio app: no telemetry, idle OpenMP threads sleep, bounded heaps

import streamlit as st  # noqa: E402

from appcore import photos, presentation as present  # noqa: E402
from appcore.analysis import Analyser, image_digest, server_analyser  # noqa: E402
from appcore.catalogue import ModelUnavailable, parse_hub_id  # noqa: E402
from appcore.charts import prediction_chart  # noqa: E402
from appcore.examples import Example, shipped_examples  # noqa: E402
from appcore.exports import MIME_TYPES, downloads  # noqa: E402
from appcore.menu import default_choice  # noqa: E402
from appcore.page import message_of  # noqa: E402
from explain.controls import CONTROLS  # noqa: E402
from explain.methods import get_method  # noqa: E402
from fundus.tasks import task_of  # noqa: E402
from explain.views import ViewParams, before_after, render_view  # noqa: E402

@st.cache_resource
def shared_core() -> tuple[Analyser, tuple[list[Example], int]]:
    """One analyser (model cache + analysis cache), and the Gradio app's example photos (the real ones in
    ``assets/examples``, with their known diagnoses) and the one the page opens on, for every session."""
    return server_analyser(), shipped_examples()


@st.cache_resource(max_entries=8, show_spinner=False)
def decoded_photo(file_hash: str, _data: bytes) -> tuple:
    """The validated RGB photo and its digest, decoded once per file (``file_hash`` is the cache key).

    Raises:
        photos.PhotoRejected: not a usable image (not cached: the next try decodes again).
    """
    rgb = photos.load_photo(_data)
    return rgb, image_digest(rgb)


@st.cache_resource(max_entries=12, show_spinner="Explaining (one network pass)…")
def analysed(digest: str, model_key: str, target: str, _rgb):
    """The analysis of a photo by a model for a target: one network pass, then served from the cache.

    Raises:
        NotFundusError: (a ValueError) the photo is not a fundus photograph (never cached as an analysis).
    """
    analyser, _examples = shared_core()
    return analyser.analyse(_rgb, model_key, target, digest=digest)


def reset_region_defaults(model_key: str, config) -> None:
    """Set the controls a model has defaults for (θ, τ, t) to that model's when the model changed since the last
    run (as Gradio does). Runs before the widgets are drawn, so their session state can still be written."""
    own = [c for c in CONTROLS if c.config]
    if st.session_state.get("region_defaults_of") == model_key and all(c.name in st.session_state for c in own):
        return
    for control in own:
        st.session_state[control.name] = control.default_for(config)
    st.session_state["region_defaults_of"] = model_key


def control_widget(control):
    """The Streamlit widget of a view control (``explain.controls``); its value."""
    if control.kind == "slider":
        numbers = (control.minimum, control.maximum, control.step)
        if control.type is float:
            numbers = tuple(float(v) for v in numbers)
        options = {} if control.config else {"value": control.default}  # a model's default is in the session state
        return st.slider(control.label, *numbers[:2], step=numbers[2], key=control.name, **options)
    if control.kind == "checkbox":
        return st.checkbox(control.label, value=control.default, key=control.name)
    labels = {value: label for label, value in control.choices}
    if control.kind == "checkboxes":
        return st.multiselect(control.label, list(labels), format_func=labels.get, key=control.name)
    return st.selectbox(control.label, list(labels), format_func=labels.get, index=list(labels).index(control.default),
                        key=control.name)


def load_hub_model() -> None:
    """The hub box's Load button (a callback: it runs before the widgets are drawn, so it may select the model):
    the typed repo id is fetched (or found in the hub cache, offline) and loaded like the Gradio app's, then joins
    this session's menu and is selected; a failure's message waits in ``hub_status``."""
    analyser, _examples = shared_core()
    st.session_state["hub_status"] = ""
    try:
        key = parse_hub_id(st.session_state.get("hub_id", "")).key
        with st.spinner(f"Loading {key}…"):
            analyser.models.get(key)
    except ModelUnavailable as exc:  # not a hub id, not found, offline and not cached, not a zoo model
        st.session_state["hub_status"] = str(exc)
        return
    added = st.session_state.get("added_models", [])
    st.session_state["added_models"] = analyser.models.catalogue.session_added(added, key)
    st.session_state["model"] = key


def pick_model(analyser) -> str | None:
    """The sidebar's model menu (grouped by paper, this session's hub models in it) and the hub box; the selected
    menu value, or None when there is no model at all."""
    catalogue = analyser.models.catalogue
    choices = catalogue.menu(st.session_state.get("added_models", []))
    if not choices:
        st.error("No models: none shipped in assets/ and none configured in FUNDUS_ZOO_MODELS.")
        return None
    labels = {choice.key: choice.label for choice in choices}
    if st.session_state.get("model") not in labels:  # a new session: the default model (dr-grade-classifier when offered)
        st.session_state["model"] = default_choice(choices).key
    key = st.selectbox("Model", list(labels), format_func=labels.get, key="model")
    with st.expander("Another model from the Hugging Face hub"):
        st.text_input("Hub repo id", placeholder="org/name[@revision]", key="hub_id")
        st.button("Load", key="hub_load", on_click=load_hub_model)
        if st.session_state.get("hub_status"):
            st.error(st.session_state["hub_status"])
    return key


def offer_downloads(analysis, params: ViewParams, view, name: str) -> None:
    """The Gradio app's downloads as buttons: panels (PNG), raw maps (.npy), view (JSON); each file is made only
    when its button is clicked."""
    st.caption("Downloads: the panels (PNG), the raw maps (.npy) and the view with its reproduce command (JSON)")
    for column, (file_name, make) in zip(st.columns(3), downloads(analysis, params, view, name).items()):
        suffix = Path(file_name).suffix
        column.download_button(file_name, make, file_name=file_name, mime=MIME_TYPES[suffix],
                               key=f"download{suffix}", on_click="ignore")


def main() -> None:
    page_head()
    analyser, (examples, start) = shared_core()
    with st.sidebar:
        chosen = sidebar(analyser)
    if chosen is None:
        return
    model_key, target, values = chosen
    photo = chosen_photo(examples, start)
    if photo is None:
        st.info("Upload a fundus photo or pick an example.")
        return
    data, name, example = photo
    try:
        rgb, digest = decoded_photo(hashlib.blake2b(data, digest_size=16).hexdigest(), data)
        analysis = analysed(digest, model_key, target, rgb)
        params = ViewParams(**values)
        view = render_view(analysis, params)
    except Exception as exc:  # noqa: BLE001 - e.g. not a fundus photograph: the reason, and no classification
        st.error(message_of(exc))  # the Gradio app's status line: no paths, no internals
        return
    show_result(analysis, example, data, name)
    show_view(analysis, params, view)
    offer_downloads(analysis, params, view, name)


def page_head() -> None:
    """Page settings, styles, the title and the clinical notice."""
    st.set_page_config(page_title="Fundus CAM Zoo", layout="wide")
    st.set_option("client.toolbarMode", "minimal")  # no Deploy / Rerun / Clear cache for visitors
    st.markdown(f"<style>{present.CSS}</style>", unsafe_allow_html=True)  # the colour bar's and result's styles
    st.title("Fundus CAM Zoo")
    st.warning(present.NOTICE.replace("⚠️ ", ""))


def sidebar(analyser) -> tuple[str, str, dict] | None:
    """The model menu, its card, the target menu and the view's controls: (model key, target, control values), or
    None (with the reason shown) when no model can be used."""
    model_key = pick_model(analyser)
    if model_key is None:
        return None
    try:
        model, _lock = analyser.models.get(model_key)
    except (ModelUnavailable, ValueError) as exc:
        st.error(str(exc))
        return None
    config = model.config
    with st.expander("Model card: paper, labels, data, metrics"):
        st.markdown(present.card_markdown(config, model_key))
    targets = dict(task_of(config.task).target_menu(config.labels))
    target = targets[st.selectbox("Explain which output", list(targets), key="target")]
    reset_region_defaults(model_key, config)
    return model_key, target, {control.name: control_widget(control) for control in CONTROLS}


def chosen_photo(examples: list[Example], start: int) -> tuple[bytes, str, Example | None] | None:
    """The uploaded photo, else the picked example (as the Gradio page: it opens on the start example): its bytes,
    file name and example (None for an upload); None when there is neither."""
    upload = st.file_uploader("Your own photo (JPEG, PNG, TIFF, BMP, WebP; ≤ 20 MB, ≤ 50 MP)",
                              type=["jpg", "jpeg", "png", "tif", "tiff", "bmp", "webp"], key="upload")
    by_name = {e.path.name: e for e in examples}
    picked = st.selectbox("…or an example with a known diagnosis", list(by_name), index=start if examples else None,
                          format_func=lambda n: by_name[n].caption, key="example")
    if upload is not None:
        return upload.getvalue(), upload.name, None
    if picked in by_name:
        example = by_name[picked]
        return example.path.read_bytes(), example.path.name, example
    return None


def show_result(analysis, example: Example | None, data: bytes, name: str) -> None:
    """Warnings, the Gradio page's main result line (with an example's known diagnosis), the photo's crop and the
    model's input, the preprocessing and the prediction chart."""
    for note in present.warnings_of(analysis):
        st.warning(note)
    st.markdown(present.main_result(analysis, example), unsafe_allow_html=True)
    left, right = st.columns([1, 2])
    with left:
        st.image(present.photo_with_crop(analysis), caption=f"{name}: crop around the field of view")
        st.image(present.model_input_with_fov(analysis), caption="as the model sees it (FOV outlined)")
    with right:
        st.markdown(present.preprocessing_markdown(analysis, photos.describe_file(data)))
        st.plotly_chart(prediction_chart(analysis.prediction, title=present.prediction_title(analysis)),
                        key="prediction-chart")


def show_view(analysis, params: ViewParams, view) -> None:
    """The panels (with the Gradio page's panel heads), the colour bar, the θ crop, the before/after view, the
    legend and the regions."""
    for column, method in zip(st.columns(len(view.panels)), view.panels):
        column.image(view.panels[method], caption=f"{view.captions[method]}: {get_method(method).help}",
                     width="stretch")
    st.markdown(present.colorbar_html(params.colormap, present.map_grid_caption(analysis.config), notes=view.notes),
                unsafe_allow_html=True)
    crop_col, compare_col, info_col = st.columns(3)
    crop_col.image(view.crop, caption=f"θ = {params.theta} crop, enlarged (paper 000 Fig. 2f)")
    with compare_col:
        handle = st.slider("Before/after: photo ◀ handle ▶ overlay", 0, 100, 50, 1, format="%d %%", key="handle")
        st.image(before_after(view.compare, handle / 100),
                 caption=f"the photo as the model sees it | {get_method(params.compare).title} overlay")
    with info_col:
        st.markdown(present.legend_html(view.legend, view.regions), unsafe_allow_html=True)
        st.json(view.regions, expanded=False)


main()
