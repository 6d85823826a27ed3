"""Offline, weights that are not on this machine are reported before torch is imported
(gemseg.cli.precheck), and nothing the real loader would load is refused."""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys

import pytest

from cli_util import open_clip_config, run_cli, write_image
from conftest import HAS_OPEN_CLIP, HAS_TRANSFORMERS

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
HEAVY = ("torch", "open_clip", "transformers", "timm", "gradio")
COMMIT = "0" * 40


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens there once the socket is closed: connections are refused


def _unreachable_env(tmp_path) -> dict:
    """A hub that refuses connections, an empty hub cache and an empty gemseg cache, offline mode off."""
    return {"HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None, "HTTPS_PROXY": None, "https_proxy": None,
            "ALL_PROXY": None, "all_proxy": None, "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}",
            "HF_HOME": str(tmp_path / "hf-home"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}


def _cli_in_fresh_process(argv: list[str], env: dict) -> tuple[int, str, list[str], float]:
    """``gemseg ARGV`` in a new process: (exit code, stderr, heavy modules imported by the end, seconds)."""
    code = ("import sys, time; t = time.perf_counter(); from gemseg.cli import main\n"
            f"code = main({argv!r})\n"
            f"print('RESULT', code, sorted(m for m in {HEAVY!r} if m in sys.modules), time.perf_counter() - t)")
    full = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **env}
    full = {k: v for k, v in full.items() if v is not None}
    r = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=240)
    line = [s for s in r.stdout.splitlines() if s.startswith("RESULT ")]
    assert line, r.stderr[-3000:]
    _, exit_code, rest = line[-1].split(" ", 2)
    heavy, seconds = rest.rsplit(" ", 1)
    return int(exit_code), r.stderr, json.loads(heavy.replace("'", '"')), float(seconds)


# --- whole commands, in fresh processes -----------------------------------------------------------------
@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
@pytest.mark.parametrize("command", ["segment", "heatmap"])
def test_missing_open_clip_weights_are_said_without_importing_torch(command, tmp_path):
    image = write_image(tmp_path / "a.png")
    words = ["-c", "cat"] if command == "segment" else ["-p", "cat"]
    code, err, heavy, seconds = _cli_in_fresh_process([command, image, *words, "-o", str(tmp_path / "out")],
                                                      _unreachable_env(tmp_path))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("gemseg: error: cannot load weights for ViT-B-16 (openai) (127.0.0.1 is unreachable")
    assert "--random-weights" in lines[0] and "--checkpoint PATH" in lines[0]
    assert heavy == [], heavy  # found out before torch and open_clip were imported
    assert seconds < 5.0  # the bound; a refused connection makes the probe instant


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers not installed")
def test_a_missing_hub_config_is_said_without_importing_torch(tmp_path):
    image = write_image(tmp_path / "a.png")
    code, err, heavy, _ = _cli_in_fresh_process(
        ["segment", image, "-c", "cat", "--model", "openai/clip-vit-base-patch32", "--random-weights",
         "-o", str(tmp_path / "out")], _unreachable_env(tmp_path))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("gemseg: error: cannot load the model config for openai/clip-vit-base-patch32")
    assert "save_pretrained" in lines[0] and heavy == []


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
def test_serve_says_missing_weights_before_gradio_and_torch(tmp_path):
    code, err, heavy, _ = _cli_in_fresh_process(["serve", "--port", "0"], _unreachable_env(tmp_path))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "cannot load weights for ViT-B-16 (openai)" in lines[0], err
    assert heavy == []


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
@pytest.mark.parametrize("command", ["eval", "ablate"])
def test_eval_and_ablate_say_missing_weights_before_open_clip(command, tmp_path):
    """The harness imports torch to resolve the protocol; open_clip (the larger part) is never imported."""
    root = tmp_path / "VOC2012"
    root.mkdir()
    argv = [command, "--dataset", "voc21", "--data-root", str(root), "-o", str(tmp_path / "out")]
    code, err, heavy, _ = _cli_in_fresh_process(argv + (["--sweep", "l2"] if command == "ablate" else []),
                                                _unreachable_env(tmp_path))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot load weights for ViT-B-16" in err, err
    assert "open_clip" not in heavy and "transformers" not in heavy


# --- the same answer as the real loader -----------------------------------------------------------------
@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
def test_the_early_error_is_the_real_loaders_error(tmp_path, capsys, monkeypatch):
    import gemseg.cli.precheck as precheck

    image = write_image(tmp_path / "a.png")
    argv = ["segment", image, "-c", "cat", "--cache-dir", tmp_path / "empty", "-o", tmp_path / "out"]
    early = run_cli(capsys, *argv)
    monkeypatch.setattr(precheck, "unavailable", lambda args: None)  # straight to the real loader
    real = run_cli(capsys, *argv)
    # the same error line (the real path may add warnings of the libraries it imports, e.g. open_clip 2.23's)
    assert early.code == real.code == 2 and "cannot load weights" in early.err
    assert early.err.strip() == real.err.strip().splitlines()[-1]


@pytest.mark.openclip
@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
def test_the_shipped_table_is_open_clips_own():
    """The table of the installed open_clip version (scripts/open_clip_table.py writes it) lists every
    class-token ViT and tag with the places open_clip loads its weights from."""
    from gemseg.cli.models import open_clip_table
    from gemseg.cli.precheck import open_clip_version, table_path

    path = table_path(open_clip_version())
    assert os.path.isfile(path), f"no table for open_clip {open_clip_version()}: run scripts/open_clip_table.py"
    with open(path, encoding="utf-8") as f:
        table = json.load(f)
    assert table["open_clip_version"] == open_clip_version()
    key = lambda r: (r["model"], r["pretrained"])  # noqa: E731
    assert sorted(table["models"], key=key) == sorted(open_clip_table(), key=key)


# --- what is never refused ------------------------------------------------------------------------------
def _args(model="ViT-B/16", **kw) -> argparse.Namespace:
    base = dict(model=model, pretrained=None, checkpoint=None, random_weights=False, backend="auto", cache_dir=None)
    return argparse.Namespace(**{**base, **kw})


def _hub_file(cache, repo: str, filename: str) -> str:
    """Put ``filename`` of ``repo`` in a hub cache folder laid out as huggingface_hub lays it out."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(COMMIT)
    snap = folder / "snapshots" / COMMIT
    snap.mkdir(parents=True, exist_ok=True)
    (snap / filename).write_bytes(b"not really weights")
    return str(snap / filename)


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
def test_open_clip_cases_that_go_to_the_real_loader(tmp_path, tiny_model_files, monkeypatch):
    from gemseg.cli.precheck import open_clip_sources, unavailable

    empty = str(tmp_path / "empty")
    assert unavailable(_args(cache_dir=empty)) is not None  # offline (the tests' HF_HUB_OFFLINE=1), nothing cached
    cfg = open_clip_config(tiny_model_files)
    assert unavailable(_args(cfg, random_weights=True, cache_dir=empty)) is None  # a local config
    assert unavailable(_args(cfg, checkpoint=tiny_model_files["open_clip"][1], cache_dir=empty)) is None
    assert unavailable(_args(random_weights=True, cache_dir=empty)) is None
    assert unavailable(_args(checkpoint=tiny_model_files["open_clip"][1], cache_dir=empty)) is None
    assert unavailable(_args(pretrained=tiny_model_files["open_clip"][1], cache_dir=empty)) is None  # a file as tag
    assert unavailable(_args(pretrained="no-such-tag", cache_dir=empty)) is None  # the loader says which tags exist
    assert unavailable(_args("ViT-Nope-1", cache_dir=empty)) is None  # the loader suggests close names
    # cached weights: in the hub cache (the place open_clip 3 uses) or open_clip's URL download folder
    sources = open_clip_sources("ViT-B-16", "openai")
    if sources.get("hf_hub"):
        hub = tmp_path / "hub"
        _hub_file(hub, sources["hf_hub"].rstrip("/"), "open_clip_model.safetensors")
        assert unavailable(_args(cache_dir=str(hub))) is None
    url_dir = tmp_path / "downloads"
    url_dir.mkdir()
    (url_dir / os.path.basename(sources["url"])).write_bytes(b"x")
    assert unavailable(_args(cache_dir=str(url_dir))) is None
    # a reachable hub: the loader downloads
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert unavailable(_args(cache_dir=empty)) is None


@pytest.mark.skipif(not (HAS_OPEN_CLIP and HAS_TRANSFORMERS), reason="open_clip_torch and transformers needed")
def test_hub_id_and_folder_cases(tmp_path, tiny_model_files):
    from gemseg.cli.precheck import unavailable

    hub = tmp_path / "hub"
    repo = "openai/clip-vit-base-patch16"
    error = unavailable(_args(repo, random_weights=True, cache_dir=str(hub)))
    assert error is not None and error.missing == "config" and error.backend == "hf"
    _hub_file(hub, repo, "config.json")
    assert unavailable(_args(repo, random_weights=True, cache_dir=str(hub))) is None  # random weights need the config only
    error = unavailable(_args(repo, cache_dir=str(hub)))
    assert error is not None and error.missing == "weights"
    _hub_file(hub, repo, "model.safetensors")
    assert unavailable(_args(repo, cache_dir=str(hub))) is None
    assert unavailable(_args(tiny_model_files["hf"], cache_dir=str(tmp_path / "empty"))) is None  # a local folder
    assert unavailable(_args("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", cache_dir=str(hub))) is None  # open_clip's


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
def test_local_models_still_run_offline_with_the_check_on(tmp_path, tiny_model_files, capsys):
    """The check runs in every test (HF_HUB_OFFLINE=1); a tiny local model with random weights runs."""
    cfg = open_clip_config(tiny_model_files)
    image = write_image(tmp_path / "a.png")
    r = run_cli(capsys, "segment", image, "-c", "cat", "--model", cfg, "--random-weights", "--size", "32",
                "--depth", "3", "--device", "cpu", "-o", tmp_path / "out")
    assert r.code == 0, r.err
    assert len(list((tmp_path / "out").rglob("labels.png"))) == 1


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
def test_the_proxy_vfms_weights_are_checked_too(tmp_path, tiny_model_files):
    """A local CLIP model with --method proxyclip still needs its DINO's timm weights (unless random)."""
    from gemseg.cli.precheck import unavailable

    cfg, ckpt = tiny_model_files["open_clip"]
    hub = tmp_path / "hub"
    args = dict(checkpoint=ckpt, cache_dir=str(hub), method="proxyclip", proxy=None, proxy_weights="pretrained")
    error = unavailable(_args(cfg, **args))
    assert error is not None and "VFM dino-b8 (vit_base_patch8_224.dino)" in str(error)
    assert "--proxy-weights PATH" in str(error) and "--random-weights" in str(error)
    assert "VFM dinov2-b14" in str(unavailable(_args(cfg, **{**args, "proxy": "dinov2-b14"})))
    assert unavailable(_args(cfg, **{**args, "method": "trident"})) is None  # its own pair: left to its loader
    assert unavailable(_args(cfg, **{**args, "proxy_weights": ckpt})) is None  # a checkpoint file
    assert unavailable(_args(cfg, **{**args, "proxy": "vit_base_patch8_224.dino"})) is None  # a timm name
    assert unavailable(_args(cfg, **{**args, "random_weights": True})) is None
    assert unavailable(_args(cfg, **{**args, "method": "gem"})) is None
    _hub_file(hub, "timm/vit_base_patch8_224.dino", "model.safetensors")
    assert unavailable(_args(cfg, **args)) is None  # cached


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
def test_the_early_proxy_error_names_what_the_real_loader_names(tmp_path, tiny_model_files, capsys, monkeypatch):
    import gemseg.cli.precheck as precheck

    cfg, ckpt = tiny_model_files["open_clip"]
    image = write_image(tmp_path / "a.png")
    argv = ["segment", image, "-c", "cat", "--model", cfg, "--checkpoint", ckpt, "--method", "proxyclip",
            "--size", "32", "--depth", "3", "--device", "cpu", "--cache-dir", tmp_path / "empty", "-o", tmp_path / "out"]
    early = run_cli(capsys, *argv)
    monkeypatch.setattr(precheck, "unavailable", lambda args: None)
    real = run_cli(capsys, *argv)
    start = "gemseg: error: cannot load weights for VFM dino-b8 (vit_base_patch8_224.dino) (offline mode is on"
    for r in (early, real):
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and r.err.startswith(start), r.err
