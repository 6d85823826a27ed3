"""Shared fixtures: tiny random models for both backends, built in code (nothing is downloaded)."""
from __future__ import annotations

import importlib.util
import json
import os

# never touch the network: every hub client is told to stay offline before anything imports it
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

HAS_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
HAS_SENTENCEPIECE = importlib.util.find_spec("sentencepiece") is not None  # SigLIP's real tokenizer

# CI sets GEMSEG_REQUIRE_BACKENDS=1 so that a missing backend fails instead of skipping
if os.environ.get("GEMSEG_REQUIRE_BACKENDS") == "1":
    assert HAS_OPEN_CLIP and HAS_TRANSFORMERS and HAS_SENTENCEPIECE, \
        "CI requires open_clip, transformers and sentencepiece installed"

TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 4, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def tiny_open_clip_model(seed: int = 0, cfg: dict = TINY_OPEN_CLIP):
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg).eval()
    # randomize the weights open_clip initializes to constants so that tests can tell paths apart
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight")):
                p.uniform_(0.5, 1.5)
            elif name.endswith(("ln_1.bias", "ln_2.bias", "in_proj_bias", "out_proj.bias")):
                p.normal_(0, 0.1)
    return model


def tiny_open_clip_backbone(seed: int = 0):
    import open_clip

    from gemseg.backbones.open_clip import OpenCLIPBackbone

    tokenizer = open_clip.SimpleTokenizer(context_length=TINY_OPEN_CLIP["text_cfg"]["context_length"])
    return OpenCLIPBackbone(tiny_open_clip_model(seed), tokenizer, name="tiny-vit", pretrained="random")


def write_tiny_open_clip(folder) -> tuple[str, str]:
    """Write a tiny open_clip model config and its weights; returns (config.json, checkpoint) paths."""
    from safetensors.torch import save_file

    folder = str(folder)
    cfg_path = os.path.join(folder, "tiny-vit.json")
    with open(cfg_path, "w") as f:
        json.dump(TINY_OPEN_CLIP, f)
    ckpt = os.path.join(folder, "tiny-vit.safetensors")
    state = {k: v.contiguous() for k, v in tiny_open_clip_model().state_dict().items()}
    save_file(state, ckpt)
    return cfg_path, ckpt


def _byte_vocab() -> dict[str, int]:
    # CLIP's byte-to-unicode table, each byte as a token alone and at the end of a word
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = [chr(c) for c in cs]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def write_tiny_hf(folder, seed: int = 0) -> str:
    """Save a tiny random transformers CLIPModel with a byte-level tokenizer into ``folder``."""
    from transformers import CLIPConfig, CLIPModel

    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    vocab = _byte_vocab()
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "CLIPTokenizer", "model_max_length": 64}, f)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                         pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=32,
    )
    model = CLIPModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
            elif "vision_model" in name and name.endswith("bias"):
                p.normal_(0, 0.1)
    model.save_pretrained(folder)
    return folder


def tiny_hf_backbone(folder):
    from gemseg.backbones.hf_clip import create_hf_clip

    return create_hf_clip(write_tiny_hf(folder), device="cpu")


BACKENDS = [
    pytest.param("open_clip", marks=[pytest.mark.openclip,
                                     pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")]),
    pytest.param("hf", marks=[pytest.mark.hf,
                              pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers not installed")]),
]


@pytest.fixture(scope="session")
def _hf_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_hf")


@pytest.fixture(params=BACKENDS)
def backbone(request, _hf_folder):
    """A tiny random backbone, once per backend."""
    if request.param == "open_clip":
        return tiny_open_clip_backbone()
    return tiny_hf_backbone(_hf_folder)


@pytest.fixture(scope="session")
def tiny_model_files(tmp_path_factory):
    """Tiny models on disk for end-to-end tests: ``{"open_clip": (config.json, weights), "hf": folder}``
    (only the backends that are installed)."""
    root = tmp_path_factory.mktemp("tiny_models")
    files = {}
    if HAS_OPEN_CLIP:
        files["open_clip"] = write_tiny_open_clip(root)
    if HAS_TRANSFORMERS:
        files["hf"] = write_tiny_hf(root / "hf")
    return files


@pytest.fixture(scope="module")
def model(tiny_model_files):
    """A GEMModel (depth 3) on the tiny open_clip model from disk, for end-to-end evaluation tests."""
    from gemseg import create_model

    cfg, ckpt = tiny_model_files["open_clip"]
    return create_model(cfg, checkpoint=ckpt, depth=3)


# tiny random vision foundation models (timm, built from keyword overrides; nothing is downloaded)
TINY_VFM = {
    "dino": ("dino-b8", dict(img_size=32, patch_size=8)),
    "dinov2": ("dinov2-b14", dict(img_size=32, patch_size=4, init_values=0.5)),
    "dinov2-reg": ("dinov2-b14-reg", dict(img_size=32, patch_size=4, init_values=0.5)),
    "mae": ("mae-b16", dict(img_size=32, patch_size=8)),
    "sam": ("sam-b16", dict(img_size=64, patch_size=8, global_attn_indexes=(1,), window_size=4, neck_chans=16)),
}


def tiny_vfm(kind: str = "dino", seed: int = 0, **overrides):
    """A random 2-block, 32-wide VFM of ``kind`` (see TINY_VFM); MAE runs at 32x32, SAM at 64x64."""
    from gemseg.backbones.vfm import create_vfm

    name, kw = TINY_VFM[kind]
    torch.manual_seed(seed)
    extra = {"input_size": 32} if kind == "mae" else {}
    vfm = create_vfm(name, weights="random", embed_dim=32, depth=2, num_heads=2, **extra, **{**kw, **overrides})
    with torch.no_grad():  # timm starts some of these at constants; randomize so that tests can tell paths apart
        for pname, p in vfm.model.named_parameters():
            if pname.endswith(("cls_token", "reg_token", "pos_embed")):
                p.normal_(0, 0.5)
            elif pname.endswith("norm.weight") or pname.endswith("norm1.weight") or pname.endswith("norm2.weight"):
                p.uniform_(0.5, 1.5)
            elif pname.endswith(".bias"):
                p.normal_(0, 0.1)
    return vfm
