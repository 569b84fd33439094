"""Fundus CAM Zoo — the web app (Gradio Blocks; the Hugging Face Space's ``app_file``): layout and wiring only.
What each event does is ``appcore.page.Page``'s (as Gradio handlers: ``appcore.gradio_events``), the control widgets
come from ``explain.controls``, the panels from ``explain.methods``, the process's set-up and run from
``appcore.server``. Research tool, not a medical device: not for clinical use.

    python app.py [--port 7860] [--host 127.0.0.1] [--models FOLDER_OR_HUB_ID ...]
"""
from __future__ import annotations

from appcore import server

server.prepare_process()  # offline defaults and bounded heaps, before gradio and the imports that allocate

import gradio as gr  # noqa: E402

from appcore import presentation as present  # noqa: E402
from appcore.gradio_events import PageEvents  # noqa: E402
from appcore.gradio_widgets import DELETE_CACHE, LAUNCH_OPTIONS, typed_dropdown, widget  # noqa: E402
from appcore.page import (CONTROL_NAMES, DISPLAY_CONTROLS, MODEL_OUTPUTS, PHOTO_OUTPUTS, VIEW_OUTPUTS, Page,  # noqa: E402
                          redraw_outputs)
from explain.controls import CONTROLS  # noqa: E402
from explain.methods import get_method, panel_methods  # noqa: E402


def build_demo(models: list[str] | None = None, analyser=None, examples=None) -> gr.Blocks:
    """The Gradio Blocks app (launch it with ``**LAUNCH_OPTIONS``); its ``fundus_app`` is the shared ``Page``."""
    page = Page(models, analyser, examples)
    gr.set_static_paths(paths=[str(e.path) for e in page.examples])  # the example files live outside Gradio's temp
    with gr.Blocks(title="Fundus CAM Zoo", delete_cache=DELETE_CACHE) as demo:
        demo.fundus_app = page
        named = {"session": gr.State(None), "current": gr.State(default_key(page)), "added": gr.State([])}
        header(named)
        gallery, upload = photo_and_model(page, named)
        optional = panels(named)
        named["colorbar"] = gr.HTML(present.colorbar_html(), elem_id="colorbar")
        controls = {}
        with gr.Tabs(elem_id="tabs"):
            regions_tab(named, controls)
            with gr.Tab("Display", elem_id="tab-display"), gr.Row():
                controls.update({c.name: widget(c) for c in CONTROLS if c.group == "display"})
            hub_id, hub_load = card_tab(page, named)
            export = details_tab(named)
        gr.Markdown(present.EXAMPLE_CREDITS, elem_id="example-credits")
        named.update(controls)
        wire(page, demo, named, controls, upload, gallery, hub_id, hub_load, export, optional)
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo


def default_key(page: Page) -> str | None:
    return page.default.key if page.default else None


def header(named: dict) -> None:
    """Title, the clinical notice, the status line and the main result."""
    gr.HTML(present.TITLE_HTML, elem_id="title")
    gr.Markdown(present.NOTICE, elem_id="clinical-notice")
    named["status"] = gr.Markdown("", elem_id="status")
    named["main_result"] = gr.HTML("", elem_id="main-result")


def photo_and_model(page: Page, named: dict) -> tuple[gr.Gallery, gr.File]:
    """The examples, the model and target menus, the photo as the model sees it, the chart and the upload box;
    returns the gallery and the upload box."""
    targets = page.default_targets()
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            gallery = gr.Gallery(value=[(str(e.path), e.caption) for e in page.examples], columns=4, rows=2,
                                 object_fit="cover", allow_preview=False, elem_id="examples",
                                 label="Examples with known diagnoses: click one",
                                 selected_index=page.start if page.examples else None)
            with gr.Row():  # typed values: a hub id is a model too; the events validate every value
                named["model_menu"] = typed_dropdown(
                    page.menu(), "a menu value, or a hub repo id: org/name or org/name@revision",
                    value=default_key(page), label="Model", elem_id="model-menu", min_width=180)
                named["target"] = typed_dropdown(
                    targets, "the selected model's targets: 'predicted', 'all predicted' (multi-label) or "
                             "'class:<index>'", value=targets[0][1] if targets else None,
                    label="Explain which output", elem_id="target", min_width=180)
        with gr.Column(scale=3, min_width=300):
            with gr.Row(equal_height=False):
                named["model_input"] = gr.Image(label="As the model sees it (field of view outlined)",
                                                interactive=False, format="jpeg", height=240, min_width=200,
                                                elem_id="model-input", buttons=["fullscreen"])
                named["chart"] = gr.Plot(label="Classification: the model's scores and thresholds",
                                         elem_id="chart", min_width=240)
            upload = gr.File(type="filepath", file_count="single", elem_id="photo-upload", height=100,
                             label="Your own photo: drop a file here or click (JPEG, PNG, TIFF, BMP, WebP; "
                                   "≤ 20 MB)")
    return gallery, upload


def panels(named: dict) -> dict[str, gr.Column]:
    """One column per registered panel method, the optional ones hidden; returns the optional ones' columns."""
    optional = {}
    with gr.Row(equal_height=True, elem_id="panels"):
        for method in panel_methods("main") + panel_methods("optional"):
            with gr.Column(min_width=170, visible=method in panel_methods("main")) as column:
                title = get_method(method).title
                gr.Markdown(f"**{title}**  \n{get_method(method).help}", elem_classes="panel-head",
                            elem_id=f"head-{method}")
                named[method] = gr.Image(label=title, show_label=False, interactive=False, format="jpeg",
                                         elem_id=f"panel-{method}", buttons=["fullscreen"])
            if method in panel_methods("optional"):
                optional[method] = column
    return optional


def regions_tab(named: dict, controls: dict) -> None:
    """The θ/τ controls, the legend, the enlarged crop and the before/after slider."""
    with gr.Tab("Regions: θ crop, τ lesion mask", elem_id="tab-regions"):
        named["legend"] = gr.HTML("", elem_id="legend")
        with gr.Row():
            controls.update({c.name: widget(c) for c in CONTROLS if c.group == "regions"})
        with gr.Row():
            named["crop"] = gr.Image(label="θ crop, enlarged (paper 000 Fig. 2f)", interactive=False,
                                     format="jpeg", elem_id="crop", height=300, min_width=200)
            named["before_after"] = gr.ImageSlider(label="Photo | overlay (drag the handle)", elem_id="compare",
                                                   format="jpeg", max_height=300, min_width=200)


def card_tab(page: Page, named: dict) -> tuple[gr.Textbox, gr.Button]:
    """The model card and the hub box (none with FUNDUS_APP_HUB=off); returns the box and its button."""
    with gr.Tab("Model card", elem_id="tab-card"):
        named["card"] = gr.Markdown(present.card_markdown(None), elem_id="model-card")
        with gr.Row(visible=page.catalogue.hub.enabled):
            hub_id = gr.Textbox(label="Another model from the Hugging Face hub", scale=3,
                                placeholder="org/name[@revision]")
            hub_load = gr.Button("Load", scale=1)
    return hub_id, hub_load


def details_tab(named: dict) -> gr.Button:
    """Timings, preprocessing, the photo's crop, the prediction and regions as JSON, the downloads; returns the
    button that prepares them."""
    with gr.Tab("Details", elem_id="tab-details"):
        named["timings"] = gr.Markdown("", elem_id="timings")
        named["preprocessing"] = gr.Markdown("", elem_id="preprocessing")
        named["photo_view"] = gr.Image(label="The photo, with the square cut around the field of view",
                                       interactive=False, format="jpeg", height=260, elem_id="photo")
        with gr.Row():
            named["prediction"] = gr.JSON(label="Prediction", elem_id="prediction", height=260)
            named["regions"] = gr.JSON(label="Regions: θ crop box, τ lesion patches and area",
                                       elem_id="regions", height=260)
        with gr.Row():
            export = gr.Button("Prepare downloads: panels (PNG), raw maps (.npy), view (JSON)")
            named["downloads"] = gr.File(label="Downloads", file_count="multiple", interactive=False,
                                         elem_id="downloads", height=120)
    return export


def wire(page, demo, named, controls, upload, gallery, hub_id, hub_load, export, optional) -> None:
    """The events: each a ``Page`` event whose {name: value} results go to the widgets of those names."""
    events = PageEvents(page, named)
    endpoint, outputs = events.endpoint, events.outputs
    view_in = [named["session"], named["model_menu"], named["target"], *controls.values()]
    view_names = ("source", "model_key", "target_value", *CONTROL_NAMES)
    model_in = [named["current"], named["added"], named["session"], *(controls[n] for n in DISPLAY_CONTROLS)]
    model_names = ("previous", "session_added", "source", *DISPLAY_CONTROLS)
    network = dict(concurrency_limit=2, concurrency_id="network")
    redraw = dict(concurrency_limit=8, concurrency_id="redraw", show_progress="hidden")
    select_model = endpoint(page.select_model, "key", *model_names, progress=True)
    # .input, not .change: a value the events set (a reverted menu) triggers nothing.
    named["model_menu"].input(select_model, [named["model_menu"], *model_in], outputs(MODEL_OUTPUTS),
                              api_name="select_model", **network)
    hub_load.click(endpoint(page.load_hub_model, "repo_id", *model_names, progress=True), [hub_id, *model_in],
                   outputs(MODEL_OUTPUTS), api_name="load_hub_model", **network)
    upload.change(endpoint(page.photo, "path", *view_names[1:]), [upload, *view_in[1:]], outputs(PHOTO_OUTPUTS),
                  api_name="analyse", **network)
    gallery.select(events.example_clicked, None, [upload], api_name=False)
    named["target"].input(endpoint(page.target, *view_names), view_in, outputs(PHOTO_OUTPUTS),
                          api_name="explain_target", **network)
    for name, control in controls.items():  # each sends only what it changes: no unchanged picture is re-sent
        control.input(endpoint(page.redraw(name), *view_names), view_in, outputs((*redraw_outputs(name), "session")),
                      api_name=False, trigger_mode="always_last", **redraw)
    controls["extras"].input(events.columns_shown(optional), controls["extras"], list(optional.values()),
                             api_name=False)
    # One named endpoint for API clients and tests: the full redraw behind every control.
    gr.Button("Redraw", visible=False).click(endpoint(page.redraw(), *view_names), view_in,
                                             outputs((*VIEW_OUTPUTS, "session")), api_name="view", **redraw)
    export.click(endpoint(page.export, *view_names), view_in, [named["downloads"], named["status"]],
                 api_name="downloads", concurrency_limit=2)
    # A new page loads the default model (card, targets, θ/τ/t), then opens on the analysed start example.
    demo.load(select_model, [named["model_menu"], *model_in], outputs(MODEL_OUTPUTS), api_name=False,
              **network).then(events.start_photo, [named["session"]], [upload], api_name=False)


def main(argv: list[str] | None = None) -> None:
    server.serve(build_demo, argv, show_error=True, footer_links=["api", "settings"], **LAUNCH_OPTIONS)


if __name__ == "__main__":
    main()
