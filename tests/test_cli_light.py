"""``gemseg COMMAND --help`` without torch: the parsers are built from light modules (gemseg.names,
gemseg.prompts), whose lists must be the registries' own."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
HEAVY = ("torch", "open_clip", "transformers", "timm")


def test_light_names_are_the_registries_names():
    from gemseg import names
    from gemseg.backbones.base import POS_EMBED_MODES
    from gemseg.eval import protocols
    from gemseg.methods import PLUGINS, get_method, list_methods, plugin_bases
    from gemseg.postprocess import DEFAULT_REDUCTION, REDUCTIONS
    from gemseg.refiners import list_refiners

    assert names.method_names() == list_methods()
    assert {n: names.method_needs(n) for n in names.method_names()} == {n: get_method(n).needs for n in list_methods()}
    # a plug-in's bases are the methods declaring its capability (gemseg.methods.plugin_bases)
    assert names.PLUGINS == {p: (tuple(plugin_bases(p)), needs) for p, (_, _, needs) in PLUGINS.items()}
    assert names.method_needs("no-such-method") is None
    assert list(names.REFINERS) == list_refiners()
    assert (names.REDUCTIONS, names.DEFAULT_REDUCTION) == (REDUCTIONS, DEFAULT_REDUCTION)
    assert list(names.PRESETS) == protocols.list_presets()
    for key in ("RESIZES", "INTERPOLATIONS", "MODES", "POINT_CLASSES", "POINT_NORMALIZATIONS"):
        assert tuple(getattr(names, key)) == tuple(getattr(protocols, key)), key
    assert tuple(names.POS_EMBED_MODES) == tuple(POS_EMBED_MODES)
    from gemseg.backbones.vfm import VFM_MODELS

    assert names.VFMS == {k: v.timm_name for k, v in VFM_MODELS.items()}
    proxied = {m: get_method(m) for m in list_methods() if "proxy" in get_method(m).needs}
    assert names.DEFAULT_PROXIES == {m: f.default_proxy for m, f in proxied.items() if not hasattr(f.fn, "make_proxy")}


def test_the_prompt_rules_are_the_segment_modules():
    """gemseg.segment re-exports the pure-Python rules: one implementation, two import paths."""
    from gemseg import prompts, segment

    for name in ("AUTO_BACKGROUND", "DEFAULT_THRESHOLD", "DEFAULT_LOGIT_SCALE", "Background", "clean_prompts",
                 "background_rule"):
        assert getattr(segment, name) is getattr(prompts, name)


def _help(command: str) -> subprocess.CompletedProcess:
    code = ("import sys; from gemseg.cli import main\n"
            f"try:\n    main([{command!r}, '--help'])\nexcept SystemExit as e:\n    code = e.code\n"
            f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules), code)")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.parametrize("command", ["heatmap", "segment", "models", "eval", "ablate", "score", "serve"])
def test_each_commands_help_needs_no_torch(command):
    r = _help(command)
    assert r.returncode == 0, r.stderr
    *text, last = r.stdout.strip().splitlines()
    assert last == "HEAVY [] 0", r.stdout[-2000:]
    assert f"usage: gemseg {command}" in "\n".join(text)


def test_help_lists_the_true_choices():
    """What --help prints comes from the light lists, which equal the registries (test above)."""
    from gemseg.methods import list_methods
    from gemseg.refiners import list_refiners

    text = " ".join(_help("segment").stdout.split())
    assert "{" + ",".join(list_methods()) + "}" in text
    assert ", ".join(list_refiners()) in text
    assert "{softmax_then_max,max_then_softmax}" in text
    from gemseg.eval.protocols import list_presets

    assert "{" + ",".join(list_presets()) + "}" in " ".join(_help("eval").stdout.split())
