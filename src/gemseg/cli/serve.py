"""``gemseg serve``: a small web demo. Upload a picture, type prompts, get heatmaps or a segmentation.

Standard library only (``http.server``): the page posts JSON ``{"image": <base64 file bytes>, "prompts":
"cat, dog", "mode": "heatmaps" | "segment"}`` to ``/api/run`` and shows the PNGs of the reply
``{"pictures": [{"title": ..., "png": <base64>}], "found": [...], "seconds": ...}``. Bad input gets
HTTP 400 (413 when too large) with ``{"error": "<one line>"}``; the server keeps serving.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .common import add_model_args, build_model
from .options import _size, check_weights_args, clean_prompts
from .output import RANDOM_BANNER, output_size, fit
from .report import Reporter, one_line

MAX_REQUEST_BYTES = 25 * 2 ** 20  # base64 of an image of about 18 MB
MAX_PROMPTS = 32
MODES = ("heatmaps", "segment")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="web demo: heatmaps and segmentations of uploaded pictures in the browser",
        description="Serve a one-page web demo on http://HOST:PORT/: upload a picture, type prompts\n"
                    "separated by commas, and get one heatmap per prompt or a segmentation (background\n"
                    "rule 'auto' of `gemseg segment`). The model is loaded once; requests run one at a\n"
                    "time. No authentication: keep --host on 127.0.0.1 unless the network is trusted.",
        epilog="example:\n  gemseg serve --port 7860            # then open http://127.0.0.1:7860/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default: %(default)s; 0 picks a free one)")
    p.add_argument("--size", type=_size, default=(448, 448), metavar="N|HxW",
                   help="model input size (default: 448)")
    p.add_argument("--max-side", type=int, default=768, metavar="PX",
                   help="pictures are scaled so that their long side is at most PX (default: %(default)s)")
    add_model_args(p)
    p.set_defaults(func=main)


class DemoError(ValueError):
    """Bad input from the page: its message is one line for the user."""


class Demo:
    """The model and what one request does with it; no HTTP here (see :func:`make_server`)."""

    def __init__(self, model, *, size: tuple[int, int] = (448, 448), max_side: int = 768):
        self.model, self.size, self.max_side = model, tuple(size), max_side
        self.random = model.backbone.pretrained is None
        self.lock = threading.Lock()  # one forward at a time: bounded memory, no thread contention

    def run(self, image_bytes: bytes, prompts: str, mode: str = "heatmaps") -> dict:
        """Pictures for one upload: ``{"pictures": [{"title", "png"}], "found", "seconds"}``.

        Raises:
            DemoError: unreadable image, no or too many prompts, unknown mode.
        """
        from ..io import ImageLoadError, load_image

        if mode not in MODES:
            raise DemoError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        names = _prompts(prompts)
        if not image_bytes:
            raise DemoError("no image: choose a picture file first")
        try:
            image = load_image(image_bytes, name="the uploaded file").image  # no temporary file
        except ImageLoadError as e:
            raise DemoError(str(e)) from e
        image = fit(image, output_size(*image.size, self.max_side))
        start = time.perf_counter()
        with self.lock:
            pictures, found = (self._heatmaps if mode == "heatmaps" else self._segment)(image, names)
        return {"pictures": [{"title": t, "png": _png_base64(p)} for t, p in pictures], "found": found,
                "seconds": round(time.perf_counter() - start, 3), "random_weights": self.random}

    def _maps(self, image, queries: list[str]):
        """Cosine maps [Q, H, W] at the picture's size."""
        from ..segment import resize_maps

        return resize_maps(self.model.heatmaps([image], queries, size=self.size)[0].float().cpu(), image.size[::-1])

    def _heatmaps(self, image, names: list[str]):
        from .. import viz

        font = viz.get_font(viz.font_size_for(*image.size))
        maps = self._maps(image, names)
        return [(n, self._banner(viz.heatmap_figure(image, m.numpy(), font=font), font))
                for n, m in zip(names, maps)], []

    def _segment(self, image, classes: list[str]):
        import numpy as np

        from .. import viz
        from .segment import legend_entries

        seg = self.model.segment([image], classes, size=self.size, out_size=image.size[::-1])  # background "auto"
        colors = viz.palette(len(seg.names))
        stats = [{**s, "color": [int(c) for c in colors[s["index"]]]} for s in seg.stats(0)]
        labels = seg.labels[0].cpu()
        font = viz.get_font(viz.font_size_for(*image.size))
        fig = viz.segmentation_figure(image, labels.numpy().astype(np.uint8), colors, legend_entries(stats),
                                      font=font)
        found = [s["name"] for s in sorted(stats[1:], key=lambda s: -s["pixels"]) if s["pixels"]]
        return [("segmentation", self._banner(fig, font))], found

    def _banner(self, picture, font):
        from .. import viz

        return viz.banner(picture, RANDOM_BANNER, font=font) if self.random else picture


def _prompts(text: str) -> list[str]:
    """'cat, dog' -> ["cat", "dog"]: blanks dropped, duplicates used once."""
    if not isinstance(text, str):
        raise DemoError("prompts must be text, e.g. 'cat, dog'")
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise DemoError("no prompts: type what to look for, separated by commas (e.g. 'cat, dog')")
    names = clean_prompts(parts, "prompt", Reporter(quiet=True))
    if len(names) > MAX_PROMPTS:
        raise DemoError(f"{len(names)} prompts given; at most {MAX_PROMPTS} per request")
    return names


def _png_base64(picture) -> str:
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _handler(demo: Demo):
    class Handler(BaseHTTPRequestHandler):
        server_version = "gemseg-serve"

        def log_message(self, fmt, *args):  # one short line per request on stderr
            print(f"{self.address_string()} {fmt % args}", flush=True)

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: dict) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def do_GET(self):
            if self.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {self.path}; open /"})

        def do_POST(self):
            if self.path != "/api/run":
                return self._json(HTTPStatus.NOT_FOUND, {"error": f"no endpoint {self.path}; post to /api/run"})
            try:
                n = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                n = -1
            if n < 0:
                return self._json(HTTPStatus.BAD_REQUEST, {"error": "bad Content-Length header"})
            if n > MAX_REQUEST_BYTES:
                self.close_connection = True  # the body is not read
                return self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                  {"error": f"request of {n / 2 ** 20:.1f} MiB is over the limit of "
                                            f"{MAX_REQUEST_BYTES / 2 ** 20:.0f} MiB; send a smaller picture"})
            try:
                req = json.loads(self.rfile.read(n) or b"null")
                if not isinstance(req, dict):
                    raise DemoError('send a JSON object {"image": ..., "prompts": ..., "mode": ...}')
                try:
                    image = base64.b64decode(req.get("image") or "", validate=True)
                except (binascii.Error, TypeError, ValueError) as e:
                    raise DemoError("image is not base64 data; send the file's bytes base64-encoded") from e
                reply = demo.run(image, req.get("prompts", ""), req.get("mode", "heatmaps"))
            except (DemoError, json.JSONDecodeError) as e:
                msg = str(e) if isinstance(e, DemoError) else "the request body is not JSON"
                return self._json(HTTPStatus.BAD_REQUEST, {"error": msg})
            except Exception as e:  # a failure of the model must not stop the server
                return self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": one_line(e)})
            self._json(HTTPStatus.OK, reply)

    return Handler


def make_server(demo: Demo, host: str = "127.0.0.1", port: int = 7860) -> ThreadingHTTPServer:
    """An HTTP server for ``demo`` (not started: call ``serve_forever``); port 0 picks a free port."""
    return ThreadingHTTPServer((host, port), _handler(demo))


def main(args: argparse.Namespace) -> int:
    report = Reporter()
    check_weights_args(args)  # errors: one line and exit 2 from gemseg.cli.main
    model = build_model(args)
    if model.backbone.pretrained is None:
        report.warn("random weights: the pictures will be meaningless (demo/test)")
    try:
        server = make_server(Demo(model, size=args.size, max_side=args.max_side), args.host, args.port)
    except OSError as e:
        report.error(f"cannot listen on {args.host}:{args.port} ({e.strerror or e}); pick another --port")
        return 2
    host, port = server.server_address[:2]
    print(f"gemseg demo on http://{host}:{port}/  (Ctrl+C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gemseg demo</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; padding: 0 1em; }
 fieldset { border: 1px solid #ccc; padding: 1em; } label { margin-right: 1em; }
 input[type=text] { width: 30em; max-width: 100%; } #status { margin: 1em 0; min-height: 1.5em; }
 .error { color: #b00; } figure { display: inline-block; margin: 0 1em 1em 0; } img { max-width: 100%; }
</style></head><body>
<h1>gemseg: find anything you can name</h1>
<p>Training-free open-vocabulary localization with the Grounding Everything Module (GEM) on a CLIP
vision transformer. Choose a picture, type what to look for (separated by commas), and run.</p>
<form id="form"><fieldset>
 <p><input type="file" id="file" accept="image/*"></p>
 <p><input type="text" id="prompts" placeholder="cat, dog, remote control"></p>
 <p><label><input type="radio" name="mode" value="heatmaps" checked> one heatmap per prompt</label>
    <label><input type="radio" name="mode" value="segment"> segmentation (prompts are classes)</label></p>
 <p><button type="submit" id="run">Run</button></p>
</fieldset></form>
<div id="status"></div><div id="out"></div>
<script>
const $ = (id) => document.getElementById(id);
function status(text, error) { $("status").textContent = text; $("status").className = error ? "error" : ""; }
function asBase64(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result.slice(r.result.indexOf(",") + 1));
    r.onerror = () => reject(new Error("cannot read the file"));
    r.readAsDataURL(file);
  });
}
$("form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const file = $("file").files[0];
  if (!file) { status("Choose a picture first.", true); return; }
  $("run").disabled = true; status("Running...");
  try {
    const body = JSON.stringify({ image: await asBase64(file), prompts: $("prompts").value,
                                  mode: document.querySelector("input[name=mode]:checked").value });
    const res = await fetch("/api/run", { method: "POST", headers: { "Content-Type": "application/json" }, body });
    const data = await res.json();
    if (!res.ok) { status(data.error || ("error " + res.status), true); return; }
    $("out").replaceChildren(...data.pictures.map((p) => {
      const fig = document.createElement("figure"), img = document.createElement("img"),
            cap = document.createElement("figcaption");
      img.src = "data:image/png;base64," + p.png; img.alt = p.title; cap.textContent = p.title;
      fig.append(img, cap); return fig;
    }));
    status(`Done in ${data.seconds} s` + (data.found.length ? `; found: ${data.found.join(", ")}` : "") +
           (data.random_weights ? " (random weights: meaningless output)" : ""));
  } catch (e) { status(String(e), true); } finally { $("run").disabled = false; }
});
</script></body></html>
"""
