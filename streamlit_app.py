"""Fundus CAM Zoo — the Streamlit front end, on the same core as the Gradio app (appcore).

    streamlit run streamlit_app.py --server.headless true --browser.gatherUsageStats false \
        --server.fileWatcherType none

Upload a photo (or pick an example), pick a model, and see CAM | Grad-CAM | Guided Grad-CAM | GMSM with
the θ attention crop and the τ lesion mask. Research tool, not a medical device: not for clinical use.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep on a shared CPU

import streamlit as st  # noqa: E402

from appcore import photos, presentation as present  # noqa: E402
from appcore.analysis import PANEL_METHODS, Analyser, image_digest, target_choices  # noqa: E402
from appcore.catalogue import ModelCache, ModelUnavailable, available_models  # noqa: E402
from appcore.charts import prediction_chart  # noqa: E402
from appcore.examples import ensure_examples  # noqa: E402
from appcore.views import COLORMAPS, ViewParams, render_view  # noqa: E402

NO_EXAMPLE = "— none —"


@st.cache_resource
def shared_core() -> tuple[Analyser, list]:
    """One analyser (model cache + analysis cache) and the example photos for every session."""
    return Analyser(ModelCache(capacity=3), capacity=12), ensure_examples()


def main() -> None:
    st.set_page_config(page_title="Fundus CAM Zoo", layout="wide")
    st.title("Fundus CAM Zoo")
    st.warning(present.NOTICE.replace("⚠️ ", ""))
    analyser, examples = shared_core()
    menu = {choice.label: choice.key for choice in available_models()}
    if not menu:
        st.error("No models: none shipped in assets/ and none configured in FUNDUS_ZOO_MODELS.")
        return

    with st.sidebar:
        model_label = st.selectbox("Model", list(menu), key="model")
        model_key = menu[model_label]
        try:
            model, _lock = analyser.models.get(model_key)
        except (ModelUnavailable, ValueError) as exc:
            st.error(str(exc))
            return
        config = model.config
        with st.expander("Model card: paper, labels, data, metrics"):
            st.markdown(present.card_markdown(config, model_key))
        targets = dict(target_choices(config))
        target = targets[st.selectbox("Explain which output", list(targets), key="target")]
        theta = st.slider("θ attention crop (paper 000 eq. 5)", 0, 255, int(config.theta), key="theta")
        tau = st.slider("τ lesion mask (paper 004 eq. 4)", 0.0, 1.0, float(config.tau), 0.01, key="tau")
        gate = st.slider("t GMSM gate (paper 004 eq. 2)", 0.0, 5.0, float(config.t), 0.05, key="t")
        alpha = st.slider("overlay α", 0.0, 1.0, 0.5, 0.05, key="alpha")
        colormap = st.selectbox("colormap", COLORMAPS, key="colormap")
        outlines = st.checkbox("lesion outlines (paper 001's colours)", value=True, key="outlines")

    upload = st.file_uploader("Fundus photo (JPEG, PNG, TIFF, BMP, WebP; ≤ 20 MB, ≤ 50 MP)",
                              type=["jpg", "jpeg", "png", "tif", "tiff", "bmp", "webp"], key="upload")
    example = st.selectbox("…or an example (generated fundus-like images, scikit-image's CC0 retina)",
                           [NO_EXAMPLE] + [p.name for p in examples], key="example")
    if upload is not None:
        data, name = upload.getvalue(), upload.name
    elif example != NO_EXAMPLE:
        path = next(p for p in examples if p.name == example)
        data, name = path.read_bytes(), path.name
    else:
        st.info("Upload a fundus photo or pick an example.")
        return
    try:
        rgb = photos.load_photo(data)
    except photos.PhotoRejected as exc:
        st.error(str(exc))
        return
    with st.spinner("Explaining (one network pass)…"):
        analysis = analyser.analyse(rgb, model_key, target, digest=image_digest(rgb))
    for note in present.warnings_of(analysis):
        st.warning(note)
    view = render_view(analysis, ViewParams(theta, tau, gate, alpha, colormap, outlines))

    left, right = st.columns([1, 2])
    with left:
        st.image(present.photo_with_crop(analysis), caption=f"{name}: crop around the field of view")
        st.image(present.model_input_with_fov(analysis), caption="as the model sees it (FOV outlined)")
    with right:
        st.markdown(present.preprocessing_markdown(analysis, photos.describe_file(data)))
        st.plotly_chart(prediction_chart(analysis.prediction, title=present.prediction_title(analysis)),
                        key="prediction-chart")
    for column, method in zip(st.columns(4), PANEL_METHODS):
        column.image(view.panels[method], caption=view.captions[method], width="stretch")
    crop_col, info_col = st.columns([1, 2])
    crop_col.image(view.crop, caption=f"θ = {theta} crop, enlarged (paper 000 Fig. 2f)")
    with info_col:
        st.markdown(present.legend_html(view.legend, view.regions), unsafe_allow_html=True)
        st.json(view.regions, expanded=False)


main()
