"""Facts the README, docs/ and --help state that the code can check: files, counts, names, hints."""
from __future__ import annotations

import os
import re

import pytest

from gemseg.cli import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts: str) -> str:
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


def test_files_the_readme_opens_exist():
    """The README's Python example opened examples/cat.png, which does not exist."""
    opened = re.findall(r"""(?:open|imread)\(["']([^"']+\.(?:png|jpg|jpeg))["']""", _read("README.md"))
    assert opened
    for path in opened:
        if path.startswith("examples/"):
            assert os.path.isfile(os.path.join(ROOT, path)), path


def test_the_preset_count_in_the_docs_is_the_number_of_presets():
    from gemseg.eval.protocols import list_presets

    words = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
             "sixteen seventeen eighteen nineteen twenty").split()
    text = _read("docs", "evaluation.md")
    assert f"one of {words[len(list_presets())]} named presets" in text
    listed = text[text.index("named presets"):text.index("named presets") + 400]
    assert all(f"`{name}`" in listed for name in list_presets())


def test_no_doc_says_the_sweep_is_still_being_added():
    for name in os.listdir(os.path.join(ROOT, "docs")):
        if name.endswith(".md"):
            assert "being added" not in _read("docs", name), name


def test_the_reduction_help_does_not_name_the_current_version_as_the_old_one(capsys):
    from gemseg import __version__

    with pytest.raises(SystemExit):
        build_parser(["segment"]).parse_args(["segment", "--help"])
    text = capsys.readouterr().out
    assert f"gemseg {__version__}'s order" not in text and "before --reduction existed" in text
    for doc in (_read("README.md"), _read("docs", "cli.md")):
        assert f"up to gemseg {__version__}" not in doc and f"gemseg {__version__} took" not in doc
