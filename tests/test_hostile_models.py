"""Hostile weights, model configs and templates (issue 16): each is one line naming the file and the
problem, exit code 2, and a config too large for the memory is refused before anything is built."""
from __future__ import annotations

import json
import os
import pickle
import struct

import pytest
import torch

from conftest import HAS_OPEN_CLIP, HAS_TRANSFORMERS, TINY_OPEN_CLIP
from cli_util import model_args, open_clip_config, run_cli, write_image
from gemseg.backbones.weights import load_state_dict


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("gemseg: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _safetensors(header: dict, data: bytes = b"") -> bytes:
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + data


def _hostile_checkpoints(folder, valid: bytes) -> dict[str, str]:
    files = {
        "truncated.safetensors": valid[: len(valid) // 2],
        "header-only.safetensors": valid[:8],
        "huge-header.safetensors": struct.pack("<Q", 2 ** 62) + b"{}",
        "overflowing-shape.safetensors": _safetensors(
            {"w": {"dtype": "F32", "shape": [2 ** 40, 2 ** 40], "data_offsets": [0, 4]}}, b"\0" * 4),
        "lying-offsets.safetensors": _safetensors(
            {"w": {"dtype": "F32", "shape": [2 ** 20, 2 ** 20], "data_offsets": [0, 2 ** 42]}}, b"\0" * 4),
        "empty.pt": b"",
        "random.pt": os.urandom(200),
    }
    paths = {}
    for name, data in files.items():
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(data)
        paths[name] = path
    torch.save({"w": "a string, not a tensor"}, os.path.join(folder, "strings.pt"))
    torch.save([1, 2, 3], os.path.join(folder, "list.pt"))
    os.mkdir(os.path.join(folder, "folder.pt"))
    for name in ("strings.pt", "list.pt", "folder.pt"):
        paths[name] = os.path.join(folder, name)
    return paths


def test_hostile_checkpoints_are_one_line_value_errors(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(64)}, tmp_path / "valid.safetensors")
    for name, path in _hostile_checkpoints(tmp_path, (tmp_path / "valid.safetensors").read_bytes()).items():
        with pytest.raises(ValueError) as e:
            load_state_dict(path)
        text = str(e.value)
        assert path in text and "\n" not in text, (name, text)
    with pytest.raises(ValueError, match="is a folder, not a weights file"):
        load_state_dict(str(tmp_path / "folder.pt"))


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
@pytest.mark.parametrize("name", ["truncated.safetensors", "overflowing-shape.safetensors", "strings.pt", "folder.pt"])
def test_hostile_checkpoints_through_the_cli(tmp_path, capsys, tiny_model_files, name):
    cfg, ckpt = tiny_model_files["open_clip"]
    path = _hostile_checkpoints(tmp_path, open(ckpt, "rb").read())[name]
    r = run_cli(capsys, "segment", write_image(tmp_path / "a.png"), "-c", "cat", "-o", tmp_path / "out",
                "--model", cfg, "--checkpoint", path, "--device", "cpu")
    assert r.code == 2 and path in _one_line(r.err) and "does not exist" not in r.err


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers not installed")
def test_hf_folder_with_a_malicious_pickle_is_refused_in_one_line(tmp_path, capsys):
    from conftest import write_tiny_hf

    folder = write_tiny_hf(tmp_path / "hf")
    os.remove(os.path.join(folder, "model.safetensors"))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(os.path.join(folder, "pytorch_model.bin"), "wb") as f:
        pickle.dump(Evil(), f)
    r = run_cli(capsys, "segment", write_image(tmp_path / "a.png"), "-c", "cat", "-o", tmp_path / "out",
                "--model", folder, "--device", "cpu", "--size", "32")
    assert r.code == 2 and "cannot be loaded" in _one_line(r.err)
    assert not marker.exists()


def _config(tmp_path, **changes) -> str:
    cfg = json.loads(json.dumps(TINY_OPEN_CLIP))
    for key, value in changes.items():
        section, _, name = key.rpartition("__")
        (cfg[section] if section else cfg)[name] = value
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return str(path)


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
@pytest.mark.parametrize("changes, message", [
    ({"vision_cfg__patch_size": 0}, "vision_cfg.patch_size must be a positive integer"),
    ({"vision_cfg__width": "64"}, "vision_cfg.width must be a positive integer"),
    ({"vision_cfg__wdith": 64}, "vision_cfg.wdith is not an open_clip setting; did you mean 'width'?"),
    ({"vision_cfg__layers": 1e6}, "vision_cfg.layers must be a positive integer"),
    ({"vision_cfg__width": 65536}, "GiB, more than the"),
    ({"text_cfg__layers": 10 ** 6}, "GiB, more than the"),
    ({"embed_dim": 10 ** 9}, "GiB, more than the"),
    ({"text_cfg__vocab_size": 10 ** 9}, "GiB, more than the"),
    ({"vision_cfg__head_width": 48}, "multiple of head_width"),
    ({"vision_cfg__image_size": 4}, "smaller than one patch"),
])
def test_bad_model_configs_are_refused_before_building(tmp_path, changes, message):
    import open_clip

    from gemseg.backbones.model_config import read_open_clip_config

    path = _config(tmp_path, **changes)
    with pytest.raises(ValueError) as e:
        read_open_clip_config(path, open_clip)  # reads and checks; builds nothing
    assert message in str(e.value) and path in str(e.value)


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
def test_bad_model_config_through_the_cli(tmp_path, capsys):
    path = _config(tmp_path, vision_cfg__width=65536)
    r = run_cli(capsys, "segment", write_image(tmp_path / "a.png"), "-c", "cat", "-o", tmp_path / "out",
                "--model", path, "--random-weights", "--device", "cpu")
    assert r.code == 2 and path in _one_line(r.err)


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
@pytest.mark.parametrize("template", ["a {} and a {}", "a {} in {style}", "a {", "a {0}"])
@pytest.mark.parametrize("where", ["flag", "file"])
def test_templates_with_two_slots_or_named_fields(tmp_path, capsys, tiny_model_files, template, where):
    if where == "flag":
        extra = ["--template", template]
    else:
        (tmp_path / "t.txt").write_text(f"a photo of a {{}}.\n{template}\n")
        extra = ["--templates", tmp_path / "t.txt"]
    r = run_cli(capsys, "heatmap", write_image(tmp_path / "a.png"), "-p", "cat", "-o", tmp_path / "out", *extra,
                *model_args(tiny_model_files))
    line = _one_line(r.err)
    assert r.code == 2 and repr(template) in line and "placeholder" in line


def test_eval_template_file_with_two_slots(tmp_path):
    from gemseg.eval.datasets import read_templates

    (tmp_path / "t.txt").write_text("a {} and a {}\n")
    with pytest.raises(ValueError, match="2 slots"):
        read_templates(str(tmp_path / "t.txt"))


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
def test_library_encode_text_refuses_two_slots(model):
    with pytest.raises(ValueError, match="2 slots"):
        model.encode_text(["cat"], templates=["a {} and a {}"])
    with pytest.raises(ValueError, match="the field {style}"):
        model.encode_text(["cat"], templates=["a photo in {style}"])
