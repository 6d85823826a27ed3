"""The web demo without a browser: what one request returns (gemseg.demo.logic), bad input, the hub
probe and the `gemseg serve` command line."""
import socket
import sys

import numpy as np
import pytest

from conftest import HAS_OPEN_CLIP
from demo_helpers import png_bytes, random_model
from gemseg.cli import build_parser, main
from gemseg.demo import logic
from gemseg.hub import go_offline_if_unreachable, hub_reachable

pytestmark = pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")

SIZE = (32, 32)
LIMITS = logic.Limits(max_side=64)


@pytest.fixture()
def picture(tmp_path):
    def write(w=40, h=30, seed=0, data=None, name="up.png"):
        path = tmp_path / name
        path.write_bytes(png_bytes(w, h, seed) if data is None else data)
        return str(path)
    return write


def test_heatmaps_one_picture_per_prompt(model, picture):
    r = logic.run(model, picture(), "cat, dog,  cat ,", "heatmaps", size=SIZE, limits=LIMITS)
    assert [n for _, n in r.heatmaps] == ["cat", "dog"]  # blanks dropped, the repeat used once ...
    assert any("more than once" in w for w in r.warnings)  # ... and said so
    for p, _ in r.heatmaps:
        assert p.mode == "RGB" and p.width > 40 and p.height >= 30  # overlay + colour bar
    assert r.segmentation is None and r.classes == [] and r.seconds >= 0 and r.random_weights is False
    a, b = (np.asarray(p) for p, _ in r.heatmaps)
    assert not np.array_equal(a[:30, :40], b[:30, :40])  # two prompts, two different overlays


def test_segmentation_returns_the_overlay_and_the_classes_found(model, picture):
    r = logic.run(model, picture(seed=1), "cat, dog", "segmentation", background="none", threshold=0,
                  size=SIZE, limits=LIMITS)
    assert r.heatmaps == [] and r.segmentation.height >= 30 and r.segmentation.width > 40  # + legend
    assert {c["name"] for c in r.classes} <= {"cat", "dog"} and r.classes  # no background: all classes
    assert sum(c["pixels"] for c in r.classes) == 40 * 30
    assert [c["pixels"] for c in r.classes] == sorted((c["pixels"] for c in r.classes), reverse=True)
    assert [row[0] for row in r.rows()] == [c["name"] for c in r.classes]
    assert abs(sum(row[1] for row in r.rows()) - 100) < 0.1  # areas in %
    assert r.status().startswith("Done in ") and "found: " + r.classes[0]["name"] in r.status()


def test_background_prompts_can_take_pixels(model, picture):
    r = logic.run(model, picture(seed=2), "cat", "segmentation", background="wall, floor", threshold=0.99,
                  size=SIZE, limits=LIMITS)
    assert sum(c["pixels"] for c in r.classes) < 40 * 30  # a strict threshold leaves background


def test_large_pictures_are_scaled_to_max_side(model, picture):
    assert logic.load_upload(picture(200, 100), LIMITS).size == (64, 32)
    fig = logic.run(model, picture(200, 100), "cat", size=SIZE, limits=LIMITS).heatmaps[0][0]
    assert 64 < fig.width < 200 and fig.height < 100  # a 64x32 overlay beside its colour bar


def test_random_weights_put_a_banner_on_every_picture(tiny_model_files, picture):
    rnd = random_model(tiny_model_files)
    r = logic.run(rnd, picture(), "cat", size=SIZE, limits=LIMITS)
    assert r.random_weights is True and r.heatmaps[0][0].height > 30  # the red strip on top
    top = np.asarray(r.heatmaps[0][0])[2, 2]
    assert top[0] > 150 and top[1] < 60  # red
    assert "RANDOM WEIGHTS" in r.status() and "found" not in r.status()  # heatmaps mode


def test_model_settings_reuse_the_weights(model, picture):
    assert logic.model_for(model, method="gem", depth=model.config.depth) is model
    view = logic.model_for(model, method="clip")
    assert view.backbone is model.backbone and view.method == "clip"
    deeper = logic.model_for(model, depth=2, iterations=2)
    assert deeper.backbone is model.backbone and (deeper.config.depth, deeper.config.iterations) == (2, 2)
    a = logic.run(model, picture(), "cat", size=SIZE, limits=LIMITS).heatmaps[0][0]
    b = logic.run(model, picture(), "cat", method="clip", size=SIZE, limits=LIMITS).heatmaps[0][0]
    assert not np.array_equal(np.asarray(a), np.asarray(b))  # the method changed the map
    notes = logic.run(model, picture(), "cat", method="clip", depth=2, size=SIZE, limits=LIMITS).warnings
    assert any("ignores the GEM setting(s) depth" in n for n in notes)  # shown in the page, once


def test_switching_to_proxyclip_keeps_the_servers_proxy(model, picture):
    from conftest import tiny_vfm

    from gemseg import GEMModel
    from gemseg.methods import ProxyAttention

    with pytest.raises(logic.DemoError, match="needs a proxy vision model.*--proxy"):
        logic.model_for(model, method="proxyclip")  # a GEM server has no VFM to hand over
    served = GEMModel(model.backbone, config=model.config, method="proxyclip",
                      proxy=ProxyAttention(tiny_vfm("dino"), None))
    gem = logic.model_for(served, method="gem")
    assert gem.method == "gem" and gem.proxy is None and gem.backbone is served.backbone
    back = logic.model_for(gem, method="clip")
    assert back.proxy is None
    view = logic.model_for(served, method="proxyclip", depth=2)
    assert view.proxy is served.proxy and view.config.depth == 2
    assert logic.run(served, picture(), "cat", size=SIZE, limits=LIMITS).heatmaps  # the page's default: its method


@pytest.mark.parametrize("kind, prompts, kwargs, match", [
    ("none", "cat", {}, "no image"),
    ("text", "cat", {}, "not an image"),
    ("ok", " , ", {}, "no prompts"),
    ("ok", 3, {}, "must be text"),
    ("ok", "cat", {"mode": "paint"}, "unknown mode"),
    ("ok", ",".join(f"p{i}" for i in range(40)), {}, "at most 32"),
    ("ok", "cat", {"method": "magic"}, "unknown method"),
    ("ok", "cat", {"depth": 99}, "depth"),
    ("ok", "cat", {"iterations": 9}, "iterations must be between 0 and 5"),
    ("ok", "cat", {"mode": "segmentation", "background": " , "}, "background"),
    ("big", "cat", {}, "over the limit of 1 KiB"),
    ("wide", "cat", {}, "over the limit of 0.01 megapixels"),
])
def test_bad_input_is_one_clear_line(model, picture, kind, prompts, kwargs, match):
    path = {"none": None, "text": lambda: picture(data=b"not an image at all"), "ok": picture,
            "big": lambda: picture(60, 60), "wide": lambda: picture(200, 100)}[kind]
    limits = logic.Limits(max_side=64, max_bytes=1024 if kind == "big" else 2 ** 20,
                          max_pixels=10_000 if kind == "wide" else 10 ** 6)
    kwargs = {"mode": "heatmaps", **kwargs}
    with pytest.raises(logic.DemoError, match=match) as e:
        logic.run(model, path() if path else None, prompts, size=SIZE, limits=limits, **kwargs)
    assert "\n" not in str(e.value) and "up.png" not in str(e.value)  # no server paths in the page


# --- the hub probe ------------------------------------------------------------------------------------
def test_hub_probe(monkeypatch, capsys):
    for var in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listening.getsockname()[1]}")
        assert hub_reachable(timeout=2) is True
        assert go_offline_if_unreachable(timeout=2) is False and capsys.readouterr().err == ""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: connections are refused
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
        assert hub_reachable(timeout=2) is False
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        assert go_offline_if_unreachable(timeout=2) is True
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unreachable" in err[0] and "HF_HUB_OFFLINE=1" in err[0]
    assert hub_reachable() is None  # offline mode is now on: nothing to probe
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert hub_reachable() is None  # the route goes through the proxy


# --- the command line ---------------------------------------------------------------------------------
def test_serve_is_a_command_with_help(capsys):
    args = build_parser().parse_args(["serve", "--random-weights", "--size", "64", "--auth", "me:pw",
                                      "--queue-size", "4", "--max-pixels", "12"])
    assert args.size == (64, 64) and args.func.__module__ == "gemseg.cli.serve"
    assert (args.host, args.port, args.share, args.queue_size, args.max_pixels) == (None, None, False, 4, 12_000_000)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = capsys.readouterr().out
    assert "NO AUTHENTICATION" in text and "--share" in text and "--auth" in text


def test_serve_refuses_bad_options_in_one_line(capsys):
    assert main(["serve", "--model", "ViT-B-61", "--random-weights"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ViT-B-61" in err[0] and "did you mean" in err[0]
    assert main(["serve", "--random-weights", "--checkpoint", "w.pt"]) == 2
    assert "contradicts" in capsys.readouterr().err
    assert main(["serve", "--random-weights", "--auth", "nopassword"]) == 2
    assert "USER:PASS" in capsys.readouterr().err


def test_serve_without_gradio_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if it were not installed
    assert main(["serve", "--random-weights"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'gemseg[demo]'" in err[0]
