"""The backend registry (lazily imported factories, one entry per backend), the library's default weights,
and the CLI options that are generated from the library's data (GEMConfig fields, backend names)."""
from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

import gemseg
from gemseg.backbones import (BACKENDS, BackendSpec, create_backbone, default_pretrained, list_models,
                              register_backend, resolve_backend)
from gemseg.config import GEMConfig

from conftest import HAS_OPEN_CLIP, tiny_open_clip_backbone

CALLS = []


def _fake_factory(name, *, device, cache_dir):
    """A backend factory for the tests: records its call, returns a tiny open_clip backbone."""
    CALLS.append((name, device, cache_dir))
    return tiny_open_clip_backbone()


@pytest.fixture
def fake_backend():
    """Registers backends under test names and removes them afterwards."""
    added = []

    def add(kind, spec):
        register_backend(kind, spec)
        added.append(kind)
    yield add
    for kind in added:
        BACKENDS.pop(kind, None)


def test_every_backend_is_one_entry_with_an_importable_factory():
    assert list(BACKENDS) == ["open_clip", "hf", "hf-blip", "hf-siglip"]
    for kind, spec in BACKENDS.items():
        module, _, attr = spec.factory.partition(":")
        assert module.startswith("gemseg.backbones.") and attr.startswith("create_"), kind
        assert spec.weights_args == (kind == "open_clip")
    # importing gemseg (and the CLI's option builders) imports no backend and no optional package
    code = ("import sys, gemseg, gemseg.cli.common; "
            "print(sorted(m for m in sys.modules if m.startswith(('open_clip', 'transformers', "
            "'gemseg.backbones.hf', 'gemseg.backbones.open_clip'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_backend_is_one_line_listing_the_choices():
    for call in (lambda: resolve_backend("ViT-B/16", "timm"), lambda: create_backbone("ViT-B/16", backend="timm"),
                 lambda: gemseg.create_model("ViT-B/16", backend="timm")):
        with pytest.raises(ValueError) as e:
            call()
        assert str(e.value) == "unknown backend 'timm'; choose from auto, open_clip, hf, hf-blip, hf-siglip"
    with pytest.raises(ValueError, match="backend must be one of open_clip, hf, hf-blip, hf-siglip or user"):
        list_models("timm")


def test_a_missing_optional_package_names_the_pip_command(fake_backend):
    fake_backend("needs-pkg", BackendSpec(f"{__name__}:_fake_factory", (("gemseg_no_such_module", "no-such-pkg"),),
                                          "nosuch"))
    CALLS.clear()
    with pytest.raises(ImportError) as e:
        create_backbone("anything", backend="needs-pkg")
    assert str(e.value) == ("the nosuch backend needs `gemseg_no_such_module`: pip install 'gemseg[nosuch]' "
                            "(or pip install no-such-pkg)")
    assert CALLS == []  # the factory was never imported or called


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed (the fake factory builds one)")
def test_a_registered_backend_is_built_listed_and_selectable(fake_backend):
    fake_backend("fake", BackendSpec(f"{__name__}:_fake_factory", (("torch", "torch"),), "fake",
                                     models=("fake/tiny",)))
    CALLS.clear()
    model = gemseg.create_model("fake/tiny", backend="fake", depth=2, device="cpu", cache_dir="/tmp/x")
    assert CALLS == [("fake/tiny", "cpu", "/tmp/x")] and model.backbone.name == "tiny-vit"
    assert [e.name for e in list_models("fake")] == ["fake/tiny"]
    with pytest.raises(ValueError, match="drop pretrained/checkpoint"):  # weights come with the id
        create_backbone("fake/tiny", backend="fake", pretrained="openai")
    with pytest.raises(ValueError, match="already registered"):
        register_backend("fake", BACKENDS["fake"])
    with pytest.raises(ValueError, match="auto/user"):
        register_backend("auto", BACKENDS["fake"])
    with pytest.raises(TypeError, match="BackendSpec"):
        register_backend("other", "gemseg.backbones.open_clip:create_open_clip")
    from gemseg.cli.common import add_model_args

    parser = argparse.ArgumentParser()
    add_model_args(parser)  # the CLI's --backend choices are the registry's names
    assert parser.parse_args(["--backend", "fake"]).backend == "fake"


def test_default_weights_are_the_librarys_choice_and_the_cli_forwards_them(tmp_path):
    assert default_pretrained("ViT-B/16") == default_pretrained("ViT-L-14-336", "open_clip") == "openai"
    for name in ("my-vit.json", "hf-hub:timm/ViT-B-16-SigLIP", "openai/clip-vit-base-patch16",
                 "Salesforce/blip-itm-base-coco", "google/siglip-base-patch16-224"):
        assert default_pretrained(name) is None, name
    from gemseg.cli.common import add_model_args, model_kwargs

    parser = argparse.ArgumentParser()
    add_model_args(parser)

    def pretrained(*argv):
        return model_kwargs(parser.parse_args([*argv, "--device", "cpu"]))["pretrained"]
    assert pretrained("--model", "ViT-B/16") == "openai"
    assert pretrained("--model", "ViT-B/16", "--pretrained", "laion2b_s34b_b88k") == "laion2b_s34b_b88k"
    assert pretrained("--model", "ViT-B/16", "--random-weights") is None
    assert pretrained("--model", "ViT-B/16", "--checkpoint", "w.pt") is None
    assert pretrained("--model", "x.json", "--checkpoint", "w.pt") is None
    assert pretrained("--model", "openai/clip-vit-base-patch16") is None


# --- the CLI's GEM options are the GEMConfig fields ---------------------------------------------------
def _parser():
    from gemseg.cli.common import add_model_args

    parser = argparse.ArgumentParser()
    add_model_args(parser)
    return parser


def test_the_cli_gem_options_are_generated_from_the_gemconfig_fields():
    from gemseg.cli.common import gem_kwargs

    parser = _parser()
    defaults = gem_kwargs(parser.parse_args([]))
    assert defaults == GEMConfig().to_dict() and list(defaults) == [f.name for f in dataclasses.fields(GEMConfig)]
    text = " ".join(parser.format_help().split())  # argparse wraps lines
    for f in dataclasses.fields(GEMConfig):
        assert f.metadata["help"] in text, f.name
    for flag, shown in (("--depth DEPTH", "(default: 7)"), ("--iterations ITERATIONS", "(default: 1)"),
                        ("--temperature TEMPERATURE", "(default: adaptive)"),
                        ("--projections PROJECTIONS", "(default: v,k,q)")):
        assert flag in text and shown in text
    assert "--no-l2 ablation: no L2 normalization" in text and "--gem-mlp ablation: apply the MLP" in text
    args = parser.parse_args(["--depth", "4", "--iterations", "2", "--temperature", "0.5", "--projections", "k, q",
                              "--no-l2", "--gem-mlp"])
    assert gem_kwargs(args) == dict(depth=4, iterations=2, temperature=0.5, projections=("k", "q"),
                                    l2_normalize=False, gem_mlp=True)
    # the namespace is what it always was (run.json and the resume check record these)
    assert (args.depth, args.projections, args.no_l2, args.gem_mlp) == (4, "k, q", True, True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--depth", "deep"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--l2-normalize"])  # no flag beyond the ones the CLI always had
