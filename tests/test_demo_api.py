"""The web demo's API over HTTP with `gradio_client`: a tiny model on a free localhost port, no network."""
import os

import pytest

from conftest import HAS_OPEN_CLIP
from demo_helpers import CHELSEA, decode, png_bytes, require, serving

pytestmark = pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")

TIMEOUT = 120  # seconds per request: the CPU is slow and shared
MAX_BYTES = 2 * os.path.getsize(CHELSEA)  # the upload limit of the test server


@pytest.fixture(scope="module")
def server(model):
    require("gradio")
    from gemseg.demo import Limits, Settings

    settings = Settings(size=(32, 32), limits=Limits(max_side=128, max_bytes=MAX_BYTES), queue_size=4)
    with serving(model, settings) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    gradio_client = require("gradio_client")
    return gradio_client.Client(server, verbose=False, download_files=False)


def _call(client, image, prompts, mode="heatmaps", background="auto", threshold=0.5, method="gem", depth=3,
          iterations=1, masks="none"):
    from gradio_client import handle_file

    job = client.submit(handle_file(image), prompts, mode, background, threshold, method, depth, iterations, masks,
                        api_name="/run")
    return job.result(timeout=TIMEOUT)


def _local(item) -> str:
    """A file the server returned -> its path (the client and the server share this machine)."""
    path = item["path"] if isinstance(item, dict) and "path" in item else item
    assert isinstance(path, str) and os.path.isfile(path), item
    return path


def test_the_api_lists_one_endpoint_with_every_input(client):
    api = client.view_api(print_info=False, return_format="dict")
    params = [p["parameter_name"] for p in api["named_endpoints"]["/run"]["parameters"]]
    assert params == ["image", "prompts", "mode", "background", "threshold", "method", "depth", "iterations",
                      "masks"]
    assert list(api["named_endpoints"]) == ["/run"]  # examples and Enter in the prompt box stay private


def test_heatmaps_over_the_api(client):
    gallery, overlay, table, status = _call(client, CHELSEA, "cat, dog")
    assert [g["caption"] for g in gallery] == ["cat", "dog"]
    for g in gallery:
        im = decode(_local(g["image"]))
        assert im.width > 128 and 85 <= im.height  # a 128x85 picture beside its colour bar
    assert overlay is None and table["data"] == [] and status.startswith("Done in ")


def test_segmentation_over_the_api(client):
    gallery, overlay, table, status = _call(client, CHELSEA, "cat, sofa", "segmentation", background="none",
                                            threshold=0)
    assert gallery == []
    im = decode(_local(overlay))
    assert im.width > 128 and im.height >= 85  # overlay + legend
    names = [row[0] for row in table["data"]]
    assert names and set(names) <= {"cat", "sofa"} and "found: " in status
    assert abs(sum(row[1] for row in table["data"]) - 100) < 0.1  # areas in %, no background left


@pytest.mark.parametrize("data, prompts, match", [
    (None, " , ", "no prompts"),
    (b"this is not a picture", "cat", "not an image"),
])
def test_bad_requests_get_one_line_and_the_server_keeps_serving(client, tmp_path, data, prompts, match):
    from gradio_client.exceptions import AppError

    path = CHELSEA
    if data is not None:
        path = tmp_path / "upload.png"
        path.write_bytes(data)
    with pytest.raises(AppError, match=match) as e:
        _call(client, str(path), prompts)
    assert "\n" not in str(e.value)
    gallery, *_ = _call(client, CHELSEA, "dog")
    assert [g["caption"] for g in gallery] == ["dog"]


def test_uploads_over_the_server_limit_are_refused_before_reading(server, tmp_path):
    httpx = require("httpx")
    big = tmp_path / "big.png"
    big.write_bytes(png_bytes(600, 600, seed=4))  # Gradio's own upload limit (max_file_size)
    assert big.stat().st_size > MAX_BYTES
    with open(big, "rb") as f:
        res = httpx.post(server + "gradio_api/upload", files={"files": ("big.png", f, "image/png")}, timeout=60)
    assert res.status_code == 413


def test_auth_protects_the_page(model):
    httpx = require("httpx")
    from gemseg.demo import Settings

    with serving(model, Settings(size=(32, 32)), auth=("me", "pw")) as url:
        assert httpx.get(url + "config", timeout=60).status_code == 401
        with httpx.Client(base_url=url, timeout=60) as c:
            assert c.post("login", data={"username": "me", "password": "wrong"}).status_code == 400
            assert c.post("login", data={"username": "me", "password": "pw"}).status_code == 200
            assert c.get("config").status_code == 200


def test_app_py_serves_the_same_app(tiny_model_files, tmp_path):
    """The Space entry point: `python app.py OPTIONS` starts the page and its /run endpoint."""
    import subprocess
    import sys
    import time

    from demo_helpers import ROOT, free_port

    httpx = require("httpx")
    gradio_client = require("gradio_client")
    cfg, _ = tiny_model_files["open_clip"]
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONPATH": ""}
    log = open(tmp_path / "app.log", "w+")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "app.py"), "--model", cfg, "--random-weights",
                             "--depth", "3", "--size", "32", "--max-side", "64"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url, deadline = f"http://127.0.0.1:{port}/", time.monotonic() + TIMEOUT
        while True:
            assert proc.poll() is None, f"app.py exited: {open(tmp_path / 'app.log').read()[-2000:]}"
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "app.py did not start serving in time"
            time.sleep(0.5)
        client = gradio_client.Client(url, verbose=False, download_files=False)
        gallery, *_ = _call(client, CHELSEA, "cat")
        assert [g["caption"] for g in gallery] == ["cat"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    out = open(tmp_path / "app.log").read()
    assert "RANDOM WEIGHTS" in out and "Traceback" not in out


@pytest.mark.parametrize("kwargs, message", [
    (dict(threshold=5.0), "threshold"), (dict(depth=99), "depth"), (dict(iterations=-4), "iterations"),
    (dict(method="nope"), "method")])
def test_out_of_range_values_are_refused_without_a_traceback_in_the_server_log(client, capfd, kwargs, message):
    """The refusal used to leave a 25-line traceback in the server's log for every such request."""
    from gradio_client.exceptions import AppError

    capfd.readouterr()
    with pytest.raises(AppError, match=message):
        _call(client, CHELSEA, "cat", **kwargs)
    log = capfd.readouterr()
    assert "Traceback" not in log.err and "Traceback" not in log.out


def test_legend_text_stays_legible_when_a_phone_shrinks_the_picture():
    """On a 390-pixel phone the legend of a 768-pixel segmentation was a few pixels high."""
    import numpy as np
    from PIL import Image

    from gemseg import viz
    from gemseg.demo import logic

    image = Image.new("RGB", (768, 512), (120, 120, 120))
    labels = np.zeros((512, 768), dtype=np.uint8)
    labels[100:300, 200:500] = 1
    font = logic.page_font(image.size)
    entries = [("background (uncoloured)  80.5%", (0, 0, 0)), ("cat  19.5%", (255, 0, 0))]
    fig = viz.segmentation_figure(image, labels, viz.palette(2), entries, font=font)
    shown = min(1.0, 358 / fig.width)  # the output column of a 390x844 screen
    assert font.size * shown >= 10  # pixels of text on the screen
