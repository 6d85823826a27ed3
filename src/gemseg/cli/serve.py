"""``gemseg serve``: the Gradio web demo (:mod:`gemseg.demo`) on one loaded model."""
from __future__ import annotations

import argparse
import os

from .common import add_model_args, add_refine_arg, build_model, prepare_hub, refine_arg
from .options import megapixels, positive_int, size_arg, check_weights_args
from .report import CLIError, Reporter, one_line

DESCRIPTION = """\
Serve the web demo (Gradio) on http://HOST:PORT/: upload, paste or take a picture, type prompts
separated by commas, and get one heatmap per prompt or a segmentation (the background rules of
`gemseg segment`), with examples to click. The model is loaded once; GEM depth, iterations, the
method and the masks (none, the --masks source, or it and the masks refiner) can change per request
on the same weights. Requests wait in a bounded queue; its API is
what `gradio_client` calls (endpoint /run). Needs `pip install 'gemseg[demo]'`.

NO AUTHENTICATION by default: anyone who can reach HOST:PORT can use the server. Keep --host on
127.0.0.1 unless the network is trusted; --share opens a public *.gradio.live link to it, so use
--auth with --share or --host 0.0.0.0."""

EPILOG = """\
examples:
  gemseg serve                                  # then open http://127.0.0.1:7860/
  gemseg serve --random-weights --size 224      # no downloads: a demo of the page itself
  gemseg serve --host 0.0.0.0 --auth me:secret  # on the network, behind a password
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="web demo (Gradio): heatmaps and segmentations of pictures in the browser",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_serve_args(p)
    add_model_args(p)
    p.set_defaults(func=main)


def add_serve_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("server")
    g.add_argument("--host", default=None,
                   help="address to listen on (default: $GRADIO_SERVER_NAME, else 127.0.0.1; 0.0.0.0 "
                        "exposes the server to the network without authentication)")
    g.add_argument("--port", type=int, default=None,
                   help="port (default: $GRADIO_SERVER_PORT, else the first free one from 7860)")
    g.add_argument("--share", action="store_true",
                   help="also open a public Gradio share link (no authentication unless --auth)")
    g.add_argument("--auth", default=None, metavar="USER:PASS",
                   help="ask for this user name and password (Gradio's login page)")
    g.add_argument("--concurrency", type=positive_int, default=None, metavar="N",
                   help="requests computed at once (default: 1 on CPU, 2 on CUDA)")
    g.add_argument("--queue-size", type=positive_int, default=16, metavar="N",
                   help="requests that may wait; more are refused (default: %(default)s)")
    g.add_argument("--examples", default=None, metavar="DIR",
                   help="folder with chelsea.png for the examples (default: the repository's examples/)")
    r = p.add_argument_group("requests")
    r.add_argument("--size", type=size_arg, default=(448, 448), metavar="N|HxW",
                   help="model input size (default: 448)")
    r.add_argument("--max-side", type=int, default=768, metavar="PX",
                   help="pictures are scaled so that their long side is at most PX (default: %(default)s)")
    r.add_argument("--max-upload-mb", type=float, default=20, metavar="MB",
                   help="largest upload in MiB, refused before it is read (default: %(default)g)")
    r.add_argument("--max-pixels", type=megapixels, default=40_000_000, metavar="MP",
                   help="largest picture in megapixels, refused from its header (default: 40)")
    r.add_argument("--max-prompts", type=positive_int, default=32, metavar="N",
                   help="prompts (with background prompts) per request (default: %(default)s)")
    add_refine_arg(r)  # every segmentation request's refiners


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """'user:pass' -> ("user", "pass")."""
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise CLIError("--auth takes USER:PASS, both non-empty (e.g. --auth me:secret)")
    return user, password


def make_settings(args: argparse.Namespace, model):
    """The :class:`gemseg.demo.Settings` that ``args`` ask for, for ``model``."""
    from ..demo.app import Settings
    from ..demo.logic import Limits

    if args.max_upload_mb <= 0 or args.max_side < 0:
        raise CLIError("--max-upload-mb must be > 0 and --max-side >= 0")
    if any(s < p for s, p in zip(args.size, model.patch_size)):
        raise CLIError(f"--size {args.size[0]}x{args.size[1]} is smaller than one "
                       f"{model.patch_size[0]}x{model.patch_size[1]} patch of {model.backbone.name}")
    concurrency = args.concurrency or (2 if model.device.type == "cuda" else 1)
    limits = Limits(max_bytes=int(args.max_upload_mb * 2 ** 20), max_pixels=args.max_pixels,
                    max_prompts=args.max_prompts, max_side=args.max_side)
    return Settings(size=tuple(args.size), limits=limits, concurrency=concurrency, queue_size=args.queue_size,
                    examples=args.examples, refine=tuple(refine_arg(args) or ()))  # lposs' DINO random too under --random-weights


def _load(args: argparse.Namespace):
    """``(model, build_app, launch)``: weights sure to be missing are said before torch, gradio and
    open_clip are imported (:mod:`gemseg.cli.precheck`), then gradio is checked and the model built."""
    from . import precheck

    precheck.check(args)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from ..demo.app import build_app, launch, require_gradio

    require_gradio()
    if args.random_weights:
        import torch

        torch.manual_seed(0)  # the same random model on every run
    return build_model(args), build_app, launch


def main(args: argparse.Namespace) -> int:
    from ..errors import WeightsUnavailableError

    report = Reporter()
    check_weights_args(args)
    auth = parse_auth(args.auth)
    prepare_hub(args)  # before huggingface_hub is imported (gradio imports it too)
    try:
        model, build_app, launch = _load(args)
    except WeightsUnavailableError as e:  # one line (gemseg.cli.main), with the way to try the page anyway
        if "--random-weights" in str(e):
            raise
        raise WeightsUnavailableError(f"{one_line(e)} Or try the page with --random-weights.") from e
    settings = make_settings(args, model)
    if model.backbone.pretrained is None:
        report.warn("RANDOM WEIGHTS: the model is untrained; the page and every picture say so (demo/test)")
    if args.share or args.host not in (None, "127.0.0.1", "localhost", "::1"):
        if auth is None:
            report.warn("the server is reachable from other machines and has no authentication; "
                        "pass --auth USER:PASS unless the network is trusted")
    app = build_app(model, settings=settings)
    try:
        launch(app, host=args.host, port=args.port, share=args.share, auth=auth, settings=settings)
    except OSError as e:
        report.error(f"cannot start the server: {one_line(e)}; pick another --port")
        return 2
    except KeyboardInterrupt:
        pass
    return 0
