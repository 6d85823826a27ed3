"""A first run, offline: every command finds out in seconds and says so in one line; messages name
the command line's flags on the command line and Python's arguments in Python; --help is quick."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from cli_util import model_args, open_clip_config, run_cli, write_image
from conftest import HAS_OPEN_CLIP, HAS_TRANSFORMERS

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
OFFLINE_BOUND_S = 5.0  # the bound for an offline first error (docs/benchmarks.md has the figure)
# the whole command in a test process on a shared 2-core machine: open_clip's import and model build
# take 2-4 s there on their own; huggingface_hub's retries took 45 s and more, so 15 s still tells them apart
COMMAND_BOUND_S = 15.0


def _python(code: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -c code`` with this checkout's gemseg first on the path."""
    full = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    full = {k: v for k, v in full.items() if v is not None}
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=timeout)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens there once the socket is closed: connections are refused


def _no_proxy_env(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


# --- the hub probe ------------------------------------------------------------------------------------
def test_probe_of_a_blackholed_hub_gives_up_within_its_timeout(monkeypatch):
    """A hub that never answers (a full accept queue drops the SYN) costs the probe's timeout, not more."""
    from gemseg.hub import hub_reachable

    _no_proxy_env(monkeypatch)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        fillers = []
        for _ in range(4):  # fill the accept queue: later connection attempts hang unanswered
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(server.getsockname())
            fillers.append(c)
        try:
            monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
            t0 = time.perf_counter()
            reached = hub_reachable(timeout=1.5)
            elapsed = time.perf_counter() - t0
        finally:
            for c in fillers:
                c.close()
    assert elapsed < OFFLINE_BOUND_S
    # Linux drops the SYN (False after the timeout); a kernel that accepts anyway answers True at once
    assert reached is False or elapsed < 1.0


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
def test_offline_first_error_is_one_line_in_seconds(tmp_path):
    """The whole command, in a fresh process, against a hub address that refuses connections: before,
    huggingface_hub retried for about a minute and printed ten warnings and an ``ERROR:root:`` line."""
    image = write_image(tmp_path / "a.png")
    argv = ["heatmap", image, "-p", "cat", "--model", "ViT-B-32", "--pretrained", "openai",
            "--cache-dir", str(tmp_path / "empty-cache"), "-o", str(tmp_path / "out"), "--size", "32"]
    # torch and torchvision are imported before the clock starts (seconds on a busy 2-core machine); open_clip
    # is not: it imports huggingface_hub, which reads HF_HUB_OFFLINE once, and the probe must come first
    code = ("import sys, time; import torch, torchvision; from gemseg.cli import main\n"
            f"t = time.perf_counter(); code = main({argv!r})\n"
            "print(f'{time.perf_counter() - t:.3f}', code)")
    env = {"HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None, "HTTPS_PROXY": None, "https_proxy": None,
           "ALL_PROXY": None, "all_proxy": None, "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}",
           "HF_HOME": str(tmp_path / "hf-home")}
    r = _python(code, env)
    seconds, exit_code = r.stdout.split()
    assert exit_code == "2" and float(seconds) < COMMAND_BOUND_S, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr  # no retries, no WARNING: lines, no ERROR:root: line
    assert lines[0].startswith("gemseg: error: cannot load weights for ViT-B-32 (openai) (127.0.0.1 is unreachable")


# --- the messages -------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
def test_missing_weights_message_is_whole_and_names_flags_on_the_command_line(tmp_path, capsys):
    a = write_image(tmp_path / "a.png")
    r = run_cli(capsys, "heatmap", a, "-p", "cat", "--model", "ViT-B-32", "--pretrained", "openai",
                "--cache-dir", tmp_path / "empty-cache", "-o", tmp_path / "out")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    line = r.err.strip()
    assert "--checkpoint PATH" in line and "--random-weights" in line and "--cache-dir" in line
    assert "checkpoint=" not in line and "cache_dir=" not in line
    assert "HF_HUB_OFFLINE=1" in line and line.endswith(".")


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
def test_missing_weights_message_in_python_names_arguments_and_keeps_the_cause_whole(tmp_path):
    from gemseg import WeightsUnavailableError, create_model

    with pytest.raises(WeightsUnavailableError) as info:
        create_model("ViT-B-32", pretrained="openai", cache_dir=str(tmp_path / "empty"))
    e = info.value
    assert "checkpoint=PATH" in str(e) and "cache_dir=" in str(e) and "pretrained=None" in str(e)
    assert "--checkpoint" not in str(e) and e.missing == "weights" and e.model == "ViT-B-32 (openai)"
    cause = str(e.__cause__).strip().splitlines()[0].rstrip(". ")
    assert e.reason == cause and cause in str(e)  # the cause's first line, not cut mid-word


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers not installed")
def test_a_hub_id_offline_says_its_config_is_missing(tmp_path, capsys):
    a = write_image(tmp_path / "a.png")
    r = run_cli(capsys, "heatmap", a, "-p", "cat", "--model", "openai/clip-vit-base-patch32", "--random-weights",
                "--cache-dir", tmp_path / "empty-cache", "-o", tmp_path / "out")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    line = r.err.strip()
    assert line.startswith("gemseg: error: cannot load the model config for openai/clip-vit-base-patch32")
    assert "save_pretrained" in line and "weights for" not in line


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
def test_random_weights_are_said_once(tmp_path, tiny_model_files):
    """open_clip's own ``WARNING:root:`` line about random weights used to come on top of gemseg's."""
    cfg = open_clip_config(tiny_model_files)
    image = write_image(tmp_path / "a.png")
    argv = ["segment", image, "-c", "cat", "--model", cfg, "--random-weights", "--size", "32", "--depth", "3",
            "--device", "cpu", "-o", str(tmp_path / "out")]
    r = _python(f"import sys; from gemseg.cli import main; sys.exit(main({argv!r}))")
    assert r.returncode == 0, r.stderr
    said = [line for line in r.stderr.splitlines() if "random" in line.lower() and "[RANDOM WEIGHTS]" not in line]
    assert len(said) == 1 and said[0].startswith("gemseg: warning: RANDOM WEIGHTS"), r.stderr
    assert "WARNING:root" not in r.stderr


def test_warnings_are_one_line_each_once_and_only_on_rank_0(monkeypatch):
    import io
    import warnings

    from gemseg.cli.report import Reporter

    stream = io.StringIO()
    with Reporter(stream=stream).capture_warnings():
        for _ in range(3):
            warnings.warn("--point-threshold does not apply\nsecond line")
    assert stream.getvalue() == "gemseg: warning: --point-threshold does not apply\n"
    monkeypatch.setenv("RANK", "1")
    stream = io.StringIO()
    with Reporter(stream=stream).capture_warnings():
        warnings.warn("the same on every rank")
    assert stream.getvalue() == ""


def test_eval_warnings_are_gemseg_lines(tmp_path):
    """``gemseg eval`` printed raw UserWarnings with the file name and the source line."""
    r = _python("import sys; from gemseg.cli import main; sys.exit(main(['eval', '--dataset', 'voc21', "
                "'--point-threshold', '0.5', '--show-protocol']))")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ("gemseg: warning: --point-threshold does not apply to voc21 (dense labels) and is "
                        "ignored\n")


def test_a_closed_pipe_ends_the_listing_quietly():
    """``gemseg models | head -3`` ended in a BrokenPipeError traceback."""
    p = subprocess.Popen([sys.executable, "-m", "gemseg.cli", "models"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": SRC})
    p.stdout.close()  # the reader is gone before the first line
    err = p.stderr.read().decode()
    assert p.wait(timeout=240) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err


@pytest.mark.parametrize("argv", [["--help"], ["models", "--local"]])
def test_help_and_local_models_need_no_torch(argv, tmp_path):
    """``gemseg --help`` took seconds, ``gemseg models --local`` tens of seconds on 2 cores: imports."""
    code = ("import sys; from gemseg.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'open_clip', 'transformers', 'timm') if m in sys.modules))")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    if argv[0] == "models":  # the first listing draws up the table (and imports); the next ones read it
        first = _python(code, env)
        assert first.returncode == 0, first.stderr
    r = _python(code, env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_top_level_help_lines_match_each_command():
    """The one-line list of ``gemseg --help`` (no command module imported) is each command's own help."""
    from gemseg.cli import build_parser

    assert build_parser([]).format_help() == build_parser().format_help()  # [] lazy, None every command


def test_missing_data_root_is_reported_before_the_model_is_built(tmp_path, capsys, monkeypatch):
    import gemseg.cli.common

    def never(*args, **kwargs):
        raise AssertionError("the model was built before --data-root was checked")

    monkeypatch.setattr(gemseg.cli.common, "build_model", never)
    for argv in (["eval", "--dataset", "voc21", "--data-root", tmp_path / "nope"],
                 ["ablate", "--dataset", "voc21", "--data-root", tmp_path / "nope", "--sweep", "l2"]):
        r = run_cli(capsys, *argv, "--random-weights")
        assert r.code == 2 and r.err.strip() == (f"gemseg: error: --data-root {tmp_path / 'nope'} is not a folder "
                                                 "(conventionally .../VOCdevkit/VOC2012)")
    r = run_cli(capsys, "eval", "--dataset", "voc21", "--random-weights")
    assert r.code == 2 and "--data-root is required" in r.err
