"""The Gradio page of a generator or a classifier (needs the ``hubtune[demo]`` extra).

:func:`build_demo` makes the page; :func:`launch_demo` serves it. ``hubtune demo MODEL`` and the ``app.py`` of a
Space written by ``hubtune push --space`` both call :func:`launch_demo`, so a Space runs this very code.
Everything a visitor gets wrong (see :mod:`hubtune.demo.model`) is shown in the page as a ``gr.Error``; other
failures show a generic error, never a traceback (``show_error`` is off for them).
"""

from __future__ import annotations

import functools
import os
import random
from typing import Any, Callable

import gradio as gr

from hubtune.demo.model import (
    MAX_IMAGES,
    MAX_UPLOAD_BYTES,
    PSI_RANGE,
    SEED_MAX,
    TOP_K,
    DemoModel,
    classify,
    facts_markdown,
    generate_grid,
    load_demo_model,
    open_upload,
)
from hubtune.errors import HubtuneError

__all__ = ["DEFAULT_HOST", "build_demo", "launch_demo"]

DEFAULT_HOST = "127.0.0.1"
# the grid and the preview of small images fill their boxes, pixels kept sharp (the PNG download keeps the native size)
_CSS = ("#grid img, #examples img, #preview img { image-rendering: pixelated; }\n"
        "#grid img, #preview img { width: 100%; height: 100%; object-fit: contain; }")


def _in_page(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with a HubtuneError (a visitor's bad input) turned into a gr.Error, whose message the page shows."""
    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        try:
            return fn(*args)
        except HubtuneError as e:
            raise gr.Error(" ".join(str(e).split()), print_exception=False) from None
    return wrapper


# The preset seeds a generator page offers to click (with 16 images, no truncation).
EXAMPLE_SEEDS = (0, 1, 2, 3, 42, 2024)


def _generator_page(demo: DemoModel) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            seed = gr.Number(value=0, label="Seed", precision=None, minimum=0, maximum=SEED_MAX, step=1,
                             elem_id="seed")
            random_seed = gr.Button("Random seed", elem_id="random-seed")
            count = gr.Slider(1, MAX_IMAGES, value=16, step=1, label="Number of images", elem_id="num-images")
            psi = gr.Slider(PSI_RANGE[0], PSI_RANGE[1], value=1.0, step=0.05, elem_id="psi",
                            label="Truncation psi (1 = none; lower: more typical, less varied)",
                            visible=demo.truncation)
            generate = gr.Button("Generate", variant="primary", elem_id="generate")
        with gr.Column(scale=2):
            grid = gr.Image(label="Samples (PNG)", type="pil", format="png", interactive=False, height=480,
                            buttons=["download"], elem_id="grid")

    # preprocess=False: the values reach the checks of hubtune.demo.model as sent (3.5, "abc", 7), so every bad
    # one gets its own message rather than Gradio's generic "could not preprocess"
    run = _in_page(lambda s, n, p: generate_grid(demo, s, n, p))
    generate.click(run, inputs=[seed, count, psi], outputs=grid, api_name="generate", preprocess=False)
    random_seed.click(lambda: random.randint(0, SEED_MAX), outputs=seed, api_name="random_seed").then(
        run, inputs=[seed, count, psi], outputs=grid, api_name=False, preprocess=False)
    with gr.Column(elem_id="examples"):
        gr.Examples([[s, 16, 1.0] for s in EXAMPLE_SEEDS], inputs=[seed, count, psi], outputs=grid,
                    fn=lambda s, n, p: generate_grid(demo, s, n, p), run_on_click=True, cache_examples=False,
                    label="Preset seeds (click one)", example_labels=[f"seed {s}" for s in EXAMPLE_SEEDS])


def _classifier_page(demo: DemoModel) -> None:
    with gr.Row():
        with gr.Column():
            upload = gr.File(label="Drop an image", file_types=["image"], type="filepath", elem_id="upload")
            preview = gr.Image(label="Your image", type="pil", format="png", interactive=False, height=240,
                              elem_id="preview")
        with gr.Column():
            labels = gr.Label(num_top_classes=TOP_K, label=f"Top-{TOP_K}", elem_id="labels")
    if demo.examples:
        gallery = gr.Gallery([(path, label) for path, label in demo.examples], label="Examples from the held-out "
                             "data (click one)", columns=len(demo.examples), height=150, allow_preview=False,
                             interactive=False, object_fit="contain", buttons=[], elem_id="examples")
        # the gallery's own copies (Gradio's cache) go to the upload box, whose change event classifies them
        gallery.select(_pick_example, inputs=gallery, outputs=upload, api_name=False)

    def run(path: str | None):
        if not path:  # the visitor cleared the box: an empty answer, not an error
            return None, None
        image = open_upload(path)
        return classify(demo, image), image

    upload.change(_in_page(run), inputs=upload, outputs=[labels, preview], api_name="classify")


def _pick_example(gallery: list, selected: gr.SelectData) -> str:
    return gallery[selected.index][0]


def build_demo(model: str | os.PathLike | DemoModel, *, device: str | None = None, token: str | None = None,
               revision: str | None = None) -> gr.Blocks:
    """The page for ``model`` (an output folder, a Hub repo id or a loaded :class:`DemoModel`)."""
    demo = model if isinstance(model, DemoModel) else load_demo_model(model, device=device, token=token,
                                                                       revision=revision)
    with gr.Blocks(title=f"{demo.title} - hubtune demo", analytics_enabled=False) as blocks:
        gr.Markdown(facts_markdown(demo), elem_id="facts")
        if demo.kind == "generator":
            _generator_page(demo)
        else:
            _classifier_page(demo)
    return blocks


def launch_demo(model: str | os.PathLike | DemoModel | gr.Blocks, *, host: str | None = None,
                port: int | None = None, device: str | None = None, token: str | None = None,
                revision: str | None = None, prevent_thread_lock: bool = False, quiet: bool = False) -> gr.Blocks:
    """Serve the page of ``model`` on ``host:port``.

    ``host`` defaults to ``GRADIO_SERVER_NAME`` (which a Space sets) or 127.0.0.1, never to every interface;
    ``port`` to ``GRADIO_SERVER_PORT`` or the first free one from 7860. Uploads are capped at
    :data:`~hubtune.demo.model.MAX_UPLOAD_BYTES`.
    """
    blocks = model if isinstance(model, gr.Blocks) else build_demo(model, device=device, token=token,
                                                                   revision=revision)
    host = host or os.environ.get("GRADIO_SERVER_NAME") or DEFAULT_HOST
    blocks.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, prevent_thread_lock=prevent_thread_lock, quiet=quiet, share=False,
        show_error=False, ssr_mode=False, max_file_size=MAX_UPLOAD_BYTES, inbrowser=False, css=_CSS,
    )
    return blocks
