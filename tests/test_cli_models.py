"""`gemseg models`: both backends listed, local availability read from a hub cache, never the network."""
from __future__ import annotations

import json

import pytest

from cli_util import run_cli
from conftest import HAS_OPEN_CLIP, HAS_TRANSFORMERS

pytestmark = pytest.mark.skipif(not (HAS_OPEN_CLIP and HAS_TRANSFORMERS), reason="needs both backends")


def _fake_cache(root, repo_id: str, filename: str):
    """The layout huggingface_hub uses: models--org--name/{refs/main, snapshots/<commit>/<file>}."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (snap / filename).write_bytes(b"weights")
    return snap / filename


@pytest.fixture
def cache(tmp_path):
    root = tmp_path / "hub"
    paths = {
        ("hf", "openai/clip-vit-base-patch32"): _fake_cache(root, "openai/clip-vit-base-patch32", "model.safetensors"),
        ("open_clip", "ViT-B-32"): _fake_cache(root, "timm/vit_base_patch32_clip_224.openai",
                                               "open_clip_model.safetensors"),
    }
    return root, paths


def test_lists_both_backends_with_local_marks(capsys, cache):
    root, paths = cache
    r = run_cli(capsys, "models", "--json", "--cache-dir", root)
    assert r.code == 0
    rows = json.loads(r.out)
    assert {row["backend"] for row in rows} >= {"open_clip", "hf"}
    local = {(row["backend"], row["model"], row["pretrained"]): row["path"] for row in rows if row["local"]}
    oc = str(paths[("open_clip", "ViT-B-32")])
    assert local == {("hf", "openai/clip-vit-base-patch32", None): str(paths[("hf", "openai/clip-vit-base-patch32")]),
                     ("open_clip", "ViT-B-32", "openai"): oc,
                     ("open_clip", "ViT-B-32-quickgelu", "openai"): oc}  # the same weights file
    tags = {row["pretrained"] for row in rows if row["model"] == "ViT-B-16"}
    assert {"openai", "laion2b_s34b_b88k"} <= tags


def test_local_filter_and_table(capsys, cache):
    root, _ = cache
    r = run_cli(capsys, "models", "--local", "--cache-dir", root)
    assert r.code == 0
    lines = r.out.strip().splitlines()
    assert lines[0].split() == ["BACKEND", "MODEL", "PRETRAINED", "LOCAL"]
    assert sorted(line.split()[:3] for line in lines[1:]) == [["hf", "openai/clip-vit-base-patch32", "-"],
                                                             ["open_clip", "ViT-B-32", "openai"],
                                                             ["open_clip", "ViT-B-32-quickgelu", "openai"]]
    assert all(line.split()[-1] == "yes" for line in lines[1:])
    assert "3 model(s), 3 available locally" in r.err


def test_text_filter_accepts_slash_names(capsys, tmp_path):
    r = run_cli(capsys, "models", "ViT-B/16", "--backend", "open_clip", "--json", "--cache-dir", tmp_path)
    rows = json.loads(r.out)
    assert rows and all(row["model"].startswith("ViT-B-16") for row in rows)
    assert not any(row["local"] for row in rows)


def test_nothing_matches(capsys, tmp_path):
    r = run_cli(capsys, "models", "no-such-model", "--cache-dir", tmp_path)
    assert r.code == 1 and r.out == "" and "no models match" in r.err
    r = run_cli(capsys, "models", "--local", "--json", "--cache-dir", tmp_path)
    assert r.code == 1 and r.out.strip() == "[]"


def test_mask_generators_have_their_own_group(capsys, tmp_path):
    root = tmp_path / "hub"
    _fake_cache(root, "facebook/sam2-hiera-large", "model.safetensors")
    r = run_cli(capsys, "models", "--backend", "masks", "--json", "--cache-dir", root)
    rows = {row["model"]: row for row in json.loads(r.out)}
    assert r.code == 0 and {"sam-vit-b", "sam-vit-h", "sam2-hiera-t", "sam2.1-hiera-l"} <= set(rows)
    assert rows["sam2-hiera-l"]["local"] and not rows["sam-vit-b"]["local"]
    assert {row["backend"] for row in rows.values()} == {"masks"}
    r = run_cli(capsys, "models", "--cache-dir", root)
    assert "Mask generators (--masks MODEL" in r.out and "sam2.1-hiera-b+" in r.out


def test_models_help_names_every_group_it_lists(capsys):
    """`gemseg models --help` speaks of the groups --backend offers (open_clip, hf, vfm, masks), not of
    "both backends" (there were two once)."""
    from cli_util import run_cli

    r = run_cli(capsys, "models", "--help")
    assert r.code == 0
    text = " ".join(r.out.split())
    assert "both backends" not in text
    groups = ("open_clip", "hf", "vfm", "masks")
    assert "--backend {open_clip,hf,vfm,masks}" in text  # the groups the help must speak of
    assert "four groups" in text and all(f"({g})" in text or f"{g}," in text or f"{g}:" in text for g in groups)
