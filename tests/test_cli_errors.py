"""One error policy at the CLI edge: usage errors are one line and exit 2, bugs keep their traceback."""
from __future__ import annotations

import pytest

import gemseg.eval.score
from cli_util import run_cli
from gemseg import WeightsUnavailableError
from gemseg.cli import main
from gemseg.eval.state import StateError


def _score_args(tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    return ["score", "--num-classes", "3", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt"]


@pytest.mark.parametrize("error", [ValueError("bad value; use 3\nsecond line"), FileNotFoundError("bad value; use 3"),
                                   WeightsUnavailableError("bad value; use 3"), StateError("bad value; use 3"),
                                   ImportError("bad value; use 3")])
def test_usage_errors_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch, error):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(gemseg.eval.score, "score_folders", fail)
    r = run_cli(capsys, *_score_args(tmp_path))
    assert r.code == 2 and r.err == "gemseg: error: bad value; use 3\n"


@pytest.mark.parametrize("error", [TypeError("a bug"), AssertionError("a bug"), RuntimeError("a bug"),
                                   KeyError("a bug"), PermissionError("a bug")])
def test_bugs_keep_their_traceback(tmp_path, capsys, monkeypatch, error):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(gemseg.eval.score, "score_folders", fail)
    with pytest.raises(type(error), match="a bug"):
        main([str(a) for a in _score_args(tmp_path)])
    assert "gemseg: error" not in capsys.readouterr().err


def test_a_bug_inside_an_image_command_is_not_a_usage_error(tmp_path, capsys, monkeypatch, tiny_model_files):
    """A TypeError raised while the model is set up used to be reported as a bad argument (exit 2)."""
    from cli_util import model_args, write_image
    from gemseg import GEMModel

    def broken(self, *args, **kwargs):
        raise TypeError("broken encode_text")

    monkeypatch.setattr(GEMModel, "encode_text", broken)
    a = write_image(tmp_path / "a.png")
    with pytest.raises(TypeError, match="broken encode_text"):
        main([str(x) for x in ["segment", a, "-c", "cat", "-o", tmp_path / "out", *model_args(tiny_model_files)]])


def test_unavailable_device_is_a_usage_error(tmp_path, capsys, tiny_model_files):
    import torch

    from cli_util import model_args, write_image

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here, so --device cuda is not an error")
    a = write_image(tmp_path / "a.png")
    args = [x for x in model_args(tiny_model_files) if x not in ("--device", "cpu")]
    r = run_cli(capsys, "heatmap", a, "-p", "cat", "-o", tmp_path / "out", *args, "--device", "cuda")
    assert r.code == 2 and r.err.strip().endswith("--device cuda: CUDA is not available here; use --device cpu")
