"""The web demo (`gemseg serve`): what one request returns, bad input, and the HTTP server on localhost."""
import base64
import http.client
import io
import json
import threading

import numpy as np
import pytest
from PIL import Image

from conftest import HAS_OPEN_CLIP
from gemseg.cli import build_parser
from gemseg.cli.serve import MAX_REQUEST_BYTES, Demo, DemoError, make_server

pytestmark = pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")


def _png(w=40, h=30, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _picture(b64: str) -> Image.Image:
    im = Image.open(io.BytesIO(base64.b64decode(b64)))
    im.load()
    return im


@pytest.fixture(scope="module")
def demo(model):
    return Demo(model, size=(32, 32), max_side=64)


def test_heatmaps_one_picture_per_prompt(demo):
    out = demo.run(_png(), "cat, dog,  cat ,", "heatmaps")  # blanks dropped, the repeat used once
    assert [p["title"] for p in out["pictures"]] == ["cat", "dog"]
    for p in out["pictures"]:
        im = _picture(p["png"])
        assert im.format == "PNG" and im.width > 40 and im.height >= 30  # overlay + colour bar
    assert out["found"] == [] and out["seconds"] >= 0 and out["random_weights"] is False
    a, b = (np.asarray(_picture(p["png"])) for p in out["pictures"])
    assert not np.array_equal(a[:30, :40], b[:30, :40])  # two prompts, two different overlays


def test_segment_returns_one_figure_and_the_classes_found(demo):
    out = demo.run(_png(seed=1), "cat, dog", "segment")
    assert [p["title"] for p in out["pictures"]] == ["segmentation"]
    assert set(out["found"]) <= {"cat", "dog"}
    assert _picture(out["pictures"][0]["png"]).height >= 30


def test_large_pictures_are_scaled_to_max_side(demo):
    out = demo.run(_png(200, 100), "cat", "heatmaps")
    im = _picture(out["pictures"][0]["png"])  # 200x100 -> a 64x32 overlay beside its colour bar
    assert im.width < 200 and im.height < 100


@pytest.mark.parametrize("image, prompts, mode, match", [
    (b"", "cat", "heatmaps", "no image"),
    (b"not an image at all", "cat", "heatmaps", "uploaded file"),
    (_png(), " , ", "heatmaps", "no prompts"),
    (_png(), "cat", "paint", "unknown mode"),
    (_png(), ",".join(f"p{i}" for i in range(40)), "heatmaps", "at most"),
])
def test_bad_input_is_one_clear_line(demo, image, prompts, mode, match):
    with pytest.raises(DemoError, match=match) as e:
        demo.run(image, prompts, mode)
    assert "\n" not in str(e.value) and "gemseg-serve-" not in str(e.value)


@pytest.fixture(scope="module")
def server(demo):
    srv = make_server(demo, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        res = conn.getresponse()
        return res.status, res.getheader("Content-Type"), res.read()
    finally:
        conn.close()


def _post(port, obj):
    status, ctype, body = _request(port, "POST", "/api/run", json.dumps(obj).encode(),
                                   {"Content-Type": "application/json"})
    assert ctype == "application/json"
    return status, json.loads(body)


def test_page_and_api_over_http(server):
    status, ctype, body = _request(server, "GET", "/")
    assert status == 200 and ctype.startswith("text/html") and b"/api/run" in body
    status, reply = _post(server, {"image": base64.b64encode(_png()).decode(), "prompts": "cat", "mode": "heatmaps"})
    assert status == 200 and _picture(reply["pictures"][0]["png"]).format == "PNG"
    assert _request(server, "GET", "/nothing")[0] == 404


def test_bad_requests_get_an_error_and_the_server_keeps_serving(server):
    assert _post(server, {"image": "%%% not base64", "prompts": "cat"}) == \
        (400, {"error": "image is not base64 data; send the file's bytes base64-encoded"})
    status, reply = _post(server, {"image": base64.b64encode(_png()).decode(), "prompts": ""})
    assert status == 400 and "no prompts" in reply["error"]
    status, _, body = _request(server, "POST", "/api/run", b"{oops", {"Content-Type": "application/json"})
    assert status == 400 and json.loads(body)["error"] == "the request body is not JSON"
    status, _, body = _request(server, "POST", "/api/run", b"[1, 2]")
    assert status == 400 and "JSON object" in json.loads(body)["error"]
    # a body over the limit is refused from its Content-Length, before it is read
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=60)
    conn.putrequest("POST", "/api/run")
    conn.putheader("Content-Length", str(MAX_REQUEST_BYTES + 1))
    conn.endheaders()
    res = conn.getresponse()
    assert res.status == 413 and "over the limit" in json.loads(res.read())["error"]
    conn.close()
    status, reply = _post(server, {"image": base64.b64encode(_png()).decode(), "prompts": "dog"})
    assert status == 200 and [p["title"] for p in reply["pictures"]] == ["dog"]


def test_serve_is_a_command_with_help():
    args = build_parser().parse_args(["serve", "--port", "0", "--random-weights", "--size", "64"])
    assert args.port == 0 and args.size == (64, 64) and args.func.__module__ == "gemseg.cli.serve"


def test_serve_refuses_a_model_it_cannot_build_in_one_line(capsys):
    from gemseg.cli import main

    assert main(["serve", "--model", "ViT-B-61", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ViT-B-61" in err[0] and "did you mean" in err[0]
    assert main(["serve", "--random-weights", "--checkpoint", "w.pt", "--port", "0"]) == 2
    assert "contradicts" in capsys.readouterr().err
