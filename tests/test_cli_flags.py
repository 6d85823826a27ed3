"""One vocabulary of flags across commands; the older spellings stay as aliases of the same option."""
from __future__ import annotations

import pytest

from cli_util import model_args, record, run_cli, write_image
from gemseg.cli import build_parser

IMAGE = ["x.png"]


def _parse(*argv: str):
    return build_parser(list(argv)).parse_args(list(argv))


@pytest.mark.parametrize("command, extra", [("heatmap", ["-p", "cat"]), ("segment", ["-c", "cat"])])
@pytest.mark.parametrize("new, old, dest, value", [
    (["-o", "d"], ["--output", "d"], "output", "d"), (["--out", "d"], ["--output", "d"], "output", "d"),
    (["-q"], ["--no-progress"], "quiet", True), (["--quiet"], ["--no-progress"], "quiet", True),
    (["--overwrite"], ["--restart"], "overwrite", True)])
def test_image_commands_share_the_vocabulary(command, extra, new, old, dest, value):
    assert getattr(_parse(command, *IMAGE, *extra, *new), dest) == value
    assert getattr(_parse(command, *IMAGE, *extra, *old), dest) == value


@pytest.mark.parametrize("command", ["eval", "ablate"])
@pytest.mark.parametrize("new, old, dest, value", [
    (["-o", "d"], ["--out", "d"], "out", "d"), (["--output", "d"], ["--out", "d"], "out", "d"),
    (["-q"], ["--no-progress"], "no_progress", True), (["--quiet"], ["--no-progress"], "no_progress", True),
    (["--overwrite"], ["--restart"], "restart", True),
    (["--background", "sky,wall"], ["--background-prompts", "sky,wall"], "background_prompts", ("sky", "wall")),
    (["--prob-threshold", "0.3"], ["--prob-threshold", "0.3"], "prob_threshold", 0.3)])
def test_eval_commands_share_the_vocabulary(command, new, old, dest, value):
    assert getattr(_parse(command, *new), dest) == value
    assert getattr(_parse(command, *old), dest) == value


def test_segment_prob_threshold_and_its_old_spelling():
    assert _parse("segment", *IMAGE, "-c", "cat", "--prob-threshold", "0.7").threshold == 0.7
    assert _parse("segment", *IMAGE, "-c", "cat", "--threshold", "0.7").threshold == 0.7


def test_help_names_the_new_spellings(capsys):
    for command in ("heatmap", "segment", "eval", "ablate"):
        with pytest.raises(SystemExit):
            build_parser([command]).parse_args([command, "--help"])
        text = capsys.readouterr().out
        for flag in ("-o", "--out", "-q", "--quiet", "--overwrite"):
            assert flag in text, (command, flag)
        if command in ("segment", "eval"):
            assert "--prob-threshold" in text and "--background" in text


def test_templates_take_a_built_in_name_or_a_file(tmp_path, capsys, tiny_model_files):
    a = write_image(tmp_path / "a.png")
    r = run_cli(capsys, "heatmap", a, "-p", "cat", "--templates", "imagenet80", "-o", tmp_path / "out",
                *model_args(tiny_model_files))
    assert r.code == 0, r.err
    templates = record(tmp_path / "out", "a.png")["templates"]
    assert len(templates) == 80 and all("{}" in t for t in templates)
    f = tmp_path / "t.txt"
    f.write_text("# mine\na sketch of a {}.\n", encoding="utf-8")
    r = run_cli(capsys, "segment", a, "-c", "cat", "--templates", f, "-o", tmp_path / "out2",
                *model_args(tiny_model_files))
    assert r.code == 0 and record(tmp_path / "out2", "a.png")["templates"] == ["a sketch of a {}."]
    r = run_cli(capsys, "heatmap", a, "-p", "cat", "--templates", "nosuch", "-o", tmp_path / "out3",
                *model_args(tiny_model_files))
    from gemseg.eval.datasets import list_templates

    assert r.code == 2 and f"no such file, nor a built-in set ({', '.join(list_templates())})" in r.err
