"""The public API stays small and documented: at most the 21 names it had before the predictor, each
with a docstring (functions and classes) and a row in the README's API table."""
import inspect
import os

import gemseg

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def test_the_public_api_is_small_and_each_name_is_documented():
    names = gemseg.__all__
    assert len(names) == len(set(names)) and len(names) <= 21
    text = open(README, encoding="utf-8").read()
    table = text[text.index("### The public API"):text.index("### Layers")]
    assert f"{len(names)} names" in table
    for name in names:
        obj = getattr(gemseg, name)
        assert f"`{name}`" in table, f"{name} has no row in the README's API table"
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert (obj.__doc__ or "").strip(), f"gemseg.{name} has no docstring"
    assert "Segmenter" in names and "segment_maps" not in names  # one predictor, one label rule
