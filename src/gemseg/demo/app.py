"""The Gradio page of the web demo: widgets wired to :func:`gemseg.demo.logic.run`, nothing more.

Gradio is an optional dependency (``pip install 'gemseg[demo]'``); it is imported when a page is built.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import checks, logic

API_NAME = "run"  # the endpoint gradio_client calls: Client(url).predict(..., api_name="/run")
TITLE = "gemseg: find anything you can name"
INTRO = ("Training-free open-vocabulary localization with the Grounding Everything Module (GEM) on a CLIP "
         "vision transformer. Upload, paste or take a picture, type what to look for (separated by commas) "
         "and run: one heatmap per prompt, or a segmentation where the prompts are the classes.")
RANDOM_WARNING = ("**RANDOM WEIGHTS**: this server runs an untrained model; every picture it returns is "
                  "meaningless (demo and test mode).")
MODE_LABELS = {"heatmaps": "heatmaps (one per prompt)", "segmentation": "segmentation (prompts are classes)"}
TABLE_HEADERS = ["class", "area %", "pixels", "mean prob."]  # short: four columns fit a phone


@dataclass(frozen=True)
class Settings:
    """How the page serves one loaded model."""

    size: tuple[int, int] = (448, 448)  # (height, width) the model sees (gemseg serve --size HxW)
    limits: logic.Limits = field(default_factory=logic.Limits)  # per-request limits
    concurrency: int = 1  # requests computed at once (1 on CPU: torch already uses every core)
    queue_size: int = 16  # requests waiting beyond that; more are refused with "queue is full"
    examples: str | None = None  # folder of example pictures (None: the repository's examples/)
    refine: tuple[str, ...] = ()  # refiners of every segmentation (gemseg.refiners names, e.g. "lposs")


def require_gradio():
    """Import gradio, or raise ImportError with the line that installs it."""
    try:
        import gradio
    except ImportError as e:
        raise ImportError("the web demo needs Gradio: pip install 'gemseg[demo]' (or pip install gradio)") from e
    return gradio


def examples_folder(folder: str | None = None) -> str | None:
    """``folder``, else the repository's ``examples/`` (beside ``src/``) or ``./examples``; None if absent."""
    candidates = [folder] if folder else [Path(__file__).resolve().parents[3] / "examples", Path("examples")]
    for c in candidates:
        if c and os.path.isfile(os.path.join(c, "chelsea.png")):
            return os.path.abspath(c)
    return None


def build_app(model, *, settings: Settings = Settings()):
    """A ``gradio.Blocks`` page for ``model`` (a :class:`~gemseg.GEMModel`), its queue set up.

    Launch it with :func:`launch` (or ``app.launch(...)``); its API endpoint is ``/run``.
    """
    gr = require_gradio()
    from .. import list_methods
    from ..segment import DEFAULT_THRESHOLD

    random_weights = model.backbone.pretrained is None
    max_depth = len(model.backbone.blocks) + 1

    run = _request_handler(gr, model, settings)

    with gr.Blocks(title="gemseg demo") as app:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        if random_weights:
            gr.Markdown(f"## ⚠ {RANDOM_WARNING}", elem_id="random-weights")
        with gr.Row():
            with gr.Column():
                image = _picture_input(gr)(label="picture", type="filepath", elem_id="image",
                                           sources=["upload", "clipboard", "webcam"], height=280)
                prompts = raw(gr.Textbox)(label="prompts (comma-separated)", placeholder="cat, dog, remote control",
                                          elem_id="prompts")
                mode = raw(gr.Radio)([(v, k) for k, v in MODE_LABELS.items()], value="heatmaps", label="mode",
                                     elem_id="mode")
                button = gr.Button("Run", variant="primary", elem_id="run")
                with gr.Accordion("segmentation background", open=False):
                    background = raw(gr.Textbox)(value="auto", label="background rule: auto, none or prompts "
                                                                "(comma-separated)", elem_id="background")
                    threshold = raw(gr.Slider)(0, 1, value=DEFAULT_THRESHOLD, step=0.05, elem_id="threshold",
                                          label="threshold: pixels below this class probability become "
                                                "background (0: off)")
                with gr.Accordion("model settings (same weights)", open=False):
                    method = raw(gr.Dropdown)(list_methods(), value=model.method, label="method", elem_id="method")
                    depth = raw(gr.Slider)(0, max_depth, value=model.config.depth, step=1, elem_id="depth",
                                      label="GEM depth (the last depth-1 blocks get the GEM path)")
                    iterations = raw(gr.Slider)(0, settings.limits.max_iterations, value=model.config.iterations,
                                           step=1, label="GEM self-self iterations", elem_id="iterations")
                    masks = raw(gr.Radio)(logic.mask_choices(model), value=logic.default_masks(model, settings.refine),
                                          label="class-agnostic masks (the server's --masks)", elem_id="masks")
            with gr.Column():
                # first in the output column: above the fold on a desktop, before the outputs on a phone
                examples = _examples(gr, settings, [image, prompts, mode])
                status = gr.Markdown(label="status", elem_id="status")
                # contain, not cover: each heatmap is shown whole, its colour bar and banner included
                gallery = gr.Gallery(label="heatmaps", columns=2, format="png", elem_id="heatmaps",
                                     object_fit="contain", height="auto")
                overlay = gr.Image(label="segmentation", type="pil", format="png", interactive=False,
                                   elem_id="segmentation", visible=False)
                table = gr.Dataframe(headers=TABLE_HEADERS, label="classes found (by area)", interactive=False,
                                     elem_id="classes", visible=False, wrap=True)
        inputs = [image, prompts, mode, background, threshold, method, depth, iterations, masks]
        event = dict(fn=run, inputs=inputs, outputs=[gallery, overlay, table, status],
                     concurrency_limit=settings.concurrency)
        _wire(button, prompts, mode, examples, event, status=status, panels=[gallery, overlay, table])
    app.queue(max_size=settings.queue_size, default_concurrency_limit=settings.concurrency)
    return app


def _request_handler(gr, model, settings: Settings):
    """The page's event handler: one :func:`logic.run` request, its errors as one line in the page."""
    from .. import list_methods
    from ..errors import one_line

    max_depth = len(model.backbone.blocks) + 1

    def run(image, prompts, mode, background, threshold, method, depth, iterations, masks=None):
        try:  # every value checked by gemseg.demo.checks: the inputs hand them over raw (see raw())
            kw = checks.request(prompts, mode, background, threshold, method, depth, iterations, masks,
                                methods=list_methods(), max_depth=max_depth, limits=settings.limits)
            r = logic.run(model, image, kw.pop("prompts"), kw.pop("mode"), **kw, size=settings.size,
                          limits=settings.limits, refine=settings.refine)
        except logic.DemoError as e:
            raise gr.Error(str(e), print_exception=False) from e
        except Exception as e:  # a failure of the model must not stop the server: one line in the page
            print(f"gemseg demo: request failed: {one_line(e)}", file=sys.stderr, flush=True)
            raise gr.Error(f"the model failed on this request: {one_line(e)}", print_exception=False) from e
        for note in r.warnings:
            gr.Warning(note)
        return r.heatmaps, r.segmentation, r.rows(), r.status()

    return run


_RAW: dict = {}


def raw(component):
    """``component`` (a Gradio input class) handing its value over unchecked, as the API sent it:
    :mod:`gemseg.demo.checks` checks it instead, with one line for the client and no traceback in the
    server's log. The page draws it as ``component`` itself."""
    if component not in _RAW:
        name = component.__name__.lower()

        class Raw(component):
            def get_block_name(self) -> str:  # drawn by the frontend's own widget
                return name

            def preprocess(self, payload):
                return payload

        Raw.__name__ = Raw.__qualname__ = f"Raw{component.__name__}"
        _RAW[component] = Raw
    return _RAW[component]


def _picture_input(gr):
    """``gr.Image`` that hands over the uploaded file's path without opening it: the adapter's size and
    pixel guards then run first, and a file that is no image gets their one-line message."""

    class PictureInput(gr.Image):
        def get_block_name(self) -> str:  # drawn by the frontend's image widget
            return "image"

        def preprocess(self, payload):
            if payload is None or (payload.url or "").startswith("data:") or payload.path is None:
                return super().preprocess(payload)
            return payload.path

    return PictureInput


def _wire(button, prompts, mode, examples, event: dict, *, status, panels: list) -> None:
    """Run on a click (the API endpoint), on Enter and on an example, each after clearing the status line
    (it never outlives its result); the mode shows only its own ``panels`` (gallery, overlay, table)."""
    clear = dict(fn=lambda: "", outputs=[status], api_visibility="private", queue=False)
    button.click(**clear).then(api_name=API_NAME, **event)
    prompts.submit(**clear).then(api_visibility="private", **event)
    mode.change(_panels, inputs=[mode], outputs=panels, api_visibility="private", queue=False)
    if examples is not None:
        examples.load_input_event.then(**clear).then(api_visibility="private", **event)


def _examples(gr, settings: Settings, inputs: list):
    """The clickable examples (None without the example pictures)."""
    folder = examples_folder(settings.examples)
    if not folder:
        return None
    chelsea = os.path.join(folder, "chelsea.png")
    rows = [[chelsea, "cat, eye, nose", "heatmaps"], [chelsea, "cat, blanket, remote control", "segmentation"]]
    return gr.Examples(rows, inputs=inputs, label="examples (click to run)")


def _panels(mode: str):
    """Visibility of the heatmap gallery, the segmentation overlay and the class table for ``mode``."""
    import gradio as gr

    heatmaps = mode != "segmentation"
    return gr.update(visible=heatmaps), gr.update(visible=not heatmaps), gr.update(visible=not heatmaps)


def launch(app, *, host: str | None = None, port: int | None = None, share: bool = False,
           auth: tuple[str, str] | None = None, settings: Settings = Settings(), block: bool = True, **kwargs):
    """Start the server of ``app`` with the upload limit of ``settings``; returns Gradio's launch value.

    ``host``/``port`` ``None`` take Gradio's own defaults (``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT``,
    else 127.0.0.1:7860). ``block=False`` returns once the server is up (tests).
    """
    folder = examples_folder(settings.examples)
    return app.launch(server_name=host, server_port=port, share=share, auth=auth, show_error=True,
                      max_file_size=settings.limits.max_bytes, allowed_paths=[folder] if folder else None,
                      prevent_thread_lock=not block, ssr_mode=False, **kwargs)
