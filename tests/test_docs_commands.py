"""Commands the README and docs/ show for the 2025 methods and refiners, run on tiny models: what a new user
meets when an option a method needs is missing, and --random-weights reaching every model a command loads."""
from __future__ import annotations

import json
import os

import pytest

from cli_util import model_args, run_cli, write_image
from conftest import HAS_OPEN_CLIP

pytestmark = pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")


@pytest.mark.parametrize("extra, flag", [(["--method", "naclip", "--refine", "masks"], "--refine masks")])
def test_masks_missing_is_one_line_before_any_image(tmp_path, capsys, tiny_model_files, extra, flag):
    """`gemseg segment photo.jpg -c "cat,sofa" --refine masks` without --masks failed once per image after
    the model was built ("photo.jpg: masks are needed ... create_model(..., masks=...)"), exit 1."""
    image = write_image(tmp_path / "photo.png")
    r = run_cli(capsys, "segment", image, "-c", "cat,sofa", "-o", tmp_path / "out", *extra,
                *model_args(tiny_model_files))
    assert r.code == 2, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gemseg: error: {flag} needs class-agnostic masks"), r.err
    assert "--masks SOURCE" in lines[0] and "create_model" not in lines[0]
    assert not os.path.exists(tmp_path / "out" / "photo.png")  # no image was tried


def test_corrclip_without_masks_uses_its_own_generator(tmp_path, capsys, tiny_model_files):
    """`gemseg segment photo.jpg -c "cat,sofa" --method corrclip` (the command issue 18 names) takes CorrCLIP's
    own generator, SAM 2 Hiera-L, when --masks is not given; offline and not cached, that is one line naming
    the generator and the flag that replaces it, before any image."""
    image = write_image(tmp_path / "photo.png")
    r = run_cli(capsys, "segment", image, "-c", "cat,sofa", "-o", tmp_path / "out", "--method", "corrclip",
                "--proxy-weights", "random", "--cache-dir", tmp_path / "empty", *model_args(tiny_model_files))
    assert r.code == 2, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "SAM model sam2-hiera-l" in lines[0] and "--masks FOLDER" in lines[0], r.err
    assert not os.path.exists(tmp_path / "out" / "photo.png")  # no image was tried


@pytest.mark.parametrize("name", ["lposs", "lposs+"])
def test_random_weights_reach_the_lposs_refiners_dino(tmp_path, capsys, tiny_model_files, name):
    """`gemseg segment photo.jpg -c "cat,sofa" --method naclip --refine lposs+ --random-weights` offline failed
    on the image ("cannot load weights for VFM dino-b16"): the refiner's own DINO ignored --random-weights."""
    from cli_util import open_clip_config

    image = write_image(tmp_path / "photo.png", (40, 30))
    r = run_cli(capsys, "segment", image, "-c", "cat,sofa", "--method", "naclip", "--refine", name, "-q",
                "-o", tmp_path / "out", "--model", open_clip_config(tiny_model_files), "--random-weights",
                "--size", "32", "--device", "cpu")
    assert r.code == 0, r.err
    with open(tmp_path / "out" / "run.json", encoding="utf-8") as f:
        assert json.load(f)["settings"]["refine"] == [name]
    assert os.path.isfile(tmp_path / "out" / "photo.png" / "labels.png")


def test_random_weights_reach_the_lposs_refiner_in_eval(tmp_path, capsys, tiny_model_files):
    """`gemseg eval ... --refine lposs --random-weights`: the same refiner DINO, random too."""
    import eval_data
    from cli_util import open_clip_config

    voc = eval_data.write_voc(tmp_path / "VOC2012", n=2)
    r = run_cli(capsys, "eval", "--dataset", "voc21", "--data-root", voc, "--model", open_clip_config(tiny_model_files),
                "--random-weights", "--device", "cpu", "--workers", "0", "--no-progress", "--size", "32",
                "--templates", "single", "--method", "naclip", "--refine", "lposs", "--out", tmp_path / "out")
    assert r.code == 0, r.err
    with open(tmp_path / "out" / "result.json", encoding="utf-8") as f:
        assert json.load(f)["refine"] == ["lposs"]


def test_the_pipeline_finds_mask_files_by_the_images_path(tmp_path, tiny_model_files):
    """`gemseg.pipeline.segment("photo.jpg", ...)` with masks read from files (corrclip's `--masks files:FOLDER`)
    failed: "masks read from files need the image's path", though the path was given."""
    import numpy as np
    import timm.models

    from conftest import TINY_VFM, tiny_vfm
    from gemseg.pipeline import pipeline

    image = write_image(tmp_path / "photo.png", (40, 30), seed=1)
    (tmp_path / "masks").mkdir()
    lab = np.zeros((30, 40), np.int32)
    lab[5:20, 10:30] = 3
    np.savez(tmp_path / "masks" / "photo.npz", instance_mask=lab)
    folder = str(tmp_path / "vfm")
    timm.models.save_for_hf(tiny_vfm("dino", seed=5).model, folder, safe_serialization=True,
                            model_args=dict(embed_dim=32, depth=2, num_heads=2, **TINY_VFM["dino"][1]))
    cfg, ckpt = tiny_model_files["open_clip"]
    pipe = pipeline(cfg, checkpoint=ckpt, device="cpu", size=32, method="corrclip", proxy=folder,
                    masks=f"files:{tmp_path / 'masks'}")
    r = pipe(image, ["cat", "dog"], background="none")
    from PIL import Image

    from gemseg import Segmenter

    want = Segmenter.from_classes(pipe.model, ["cat", "dog"], background="none", size=32).predict(
        [Image.open(image).convert("RGB")], out_size=(30, 40), paths=[image]).labels[0].numpy()
    assert np.array_equal(r.labels, want)  # the same kernels on the same input: bitwise


def test_the_ignored_proxy_warning_names_every_method_that_takes_one(tmp_path, capsys, tiny_model_files):
    """The warning named "(proxyclip, corrclip)" only; cass and trident take --proxy too."""
    image = write_image(tmp_path / "photo.png")
    r = run_cli(capsys, "heatmap", image, "-p", "cat", "--proxy", "dino-b8", "-q", "-o", tmp_path / "out",
                *model_args(tiny_model_files))
    assert r.code == 0, r.err
    line = next(x for x in r.err.splitlines() if "--proxy is only used" in x)
    assert all(name in line for name in ("proxyclip", "cass", "trident", "corrclip")), line


def test_models_methods_lists_the_refiners_too(capsys):
    """`gemseg models --methods` listed methods only; the refiners of --refine were in no `gemseg models` list."""
    from gemseg.refiners import list_refiners

    r = run_cli(capsys, "models", "--methods")
    assert r.code == 0, r.err
    line = next(x for x in r.out.splitlines() if x.startswith("Refiners (--refine NAME"))
    assert line.split(": ", 1)[1].split(", ") == list_refiners()


def test_every_method_is_in_the_methods_table_the_help_and_the_models_list(capsys):
    """docs/methods.md's table of methods lacked proxyclip, trident, cass and corrclip."""
    import re

    from gemseg.cli import build_parser
    from gemseg.methods import PLUGINS, list_methods

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "docs", "methods.md"), encoding="utf-8") as f:
        text = f.read()
    table = text[text.index("| name | paper |"):text.index("### `clip`")]
    named = set(re.findall(r"^\| `([^`]+)` \|", table, flags=re.M))
    listed = run_cli(capsys, "models", "--methods").out
    with pytest.raises(SystemExit):
        build_parser(["segment"]).parse_args(["segment", "--help"])
    helptext = capsys.readouterr().out
    for name in list_methods():
        base, _, plugin = name.rpartition("+")
        assert (f"<base>+{plugin}" if plugin in PLUGINS and base else name) in named, name
        assert re.search(rf"^{re.escape(name)}\s", listed, flags=re.M), name
        assert re.search(rf"[{{,]{re.escape(name)}[,}}]", helptext), name


def test_the_pipeline_has_a_random_weights_route(tmp_path):
    """The README's first example (`gemseg.pipeline.segment`) could not run without downloaded weights: an
    open_clip name always got its default tag, and no keyword asked for random weights as --random-weights does."""
    import warnings

    from gemseg.pipeline import pipeline

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = pipeline("ViT-B-32", random_weights=True, device="cpu", size=32)
    assert not [w for w in caught if "random weights" in str(w.message)]  # asked for: not warned about
    r = pipe(write_image(tmp_path / "photo.png"), ["cat", "dog"])
    assert r.random_weights is True and r.labels.shape == (30, 40)
    with pytest.raises(ValueError, match="contradicts"):
        pipeline("ViT-B-32", random_weights=True, pretrained="openai")


@pytest.mark.parametrize("backend, title", [("vfm", "Vision foundation models"), ("masks", "Mask generators")])
def test_a_group_listed_alone_follows_the_header_directly(capsys, tmp_path, backend, title):
    """`gemseg models --backend masks` printed a blank line between the header and its group's title."""
    r = run_cli(capsys, "models", "--backend", backend, "--cache-dir", tmp_path)
    lines = r.out.splitlines()
    assert lines[0].startswith("BACKEND") and lines[1].startswith(title), lines[:3]


def test_run_json_records_the_proxy_weights_used(tmp_path, capsys, tiny_model_files):
    """With --random-weights the proxy is random, but run.json said "proxy_weights": "pretrained", and the same
    run with --proxy-weights random spelled out was refused as "other settings (proxy_weights)"."""
    from cli_util import open_clip_config

    image = write_image(tmp_path / "photo.png")
    argv = ["heatmap", image, "-p", "cat", "-q", "-o", tmp_path / "out", "--method", "proxyclip", "--model",
            open_clip_config(tiny_model_files), "--random-weights", "--size", "32", "--device", "cpu"]
    assert run_cli(capsys, *argv).code == 0
    with open(tmp_path / "out" / "run.json", encoding="utf-8") as f:
        assert json.load(f)["settings"]["proxy_weights"] == "random"
    r = run_cli(capsys, *argv, "--proxy-weights", "random")
    assert r.code == 0, r.err  # the same settings: resumed, nothing redone


def test_a_missing_mask_model_names_the_masks_flag(tmp_path, capsys, tiny_model_files):
    """`--masks sam-vit-b` offline said "pass --model FOLDER saved with save_pretrained()": that flag replaces
    the CLIP model; a SAM folder goes to --masks."""
    image = write_image(tmp_path / "photo.png")
    r = run_cli(capsys, "segment", image, "-c", "cat", "--method", "naclip", "--masks", "sam-vit-b", "--refine",
                "masks", "-o", tmp_path / "out", "--cache-dir", tmp_path / "empty", *model_args(tiny_model_files))
    assert r.code == 2 and "SAM model sam-vit-b" in r.err, r.err
    assert "--masks FOLDER" in r.err and "--model FOLDER" not in r.err


def test_list_presets_gives_corrclip_its_masks(capsys):
    """`gemseg eval --list-presets` showed corrclip's model as a command without --masks, which cannot run."""
    r = run_cli(capsys, "eval", "--list-presets")
    lines = r.out.splitlines()
    model = lines[next(i for i, x in enumerate(lines) if x.startswith("corrclip ")) + 1]
    assert "--method corrclip" in model and "--masks SOURCE" in model, model
