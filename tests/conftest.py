"""Shared fixtures: tiny random models of every backend (open_clip, HF CLIP, BLIP, SigLIP), built in code
(nothing is downloaded)."""
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


# --- BLIP and SigLIP (tokenizers built in code: a WordPiece vocabulary for BLIP, a ``tokenizers``
# word-level model for SigLIP, whose own sentencepiece model cannot be trained without sentencepiece) ---
WORDS = ["a", "photo", "of", "the", "cat", "dog", "red", "car", "grass", "sky"]


@torch.no_grad()
def _randomize(model):
    """Spread the constant-initialized norms and biases so that tests can tell paths apart."""
    for name, p in model.named_parameters():
        if "norm" in name and p.ndim == 1:
            p.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
        elif name.endswith(("bias", "probe", "class_embedding", "position_embedding", "position_embedding.weight")):
            p.normal_(0, 0.1 if name.endswith("bias") else 0.5)


def _bert_vocab(folder):
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "."] + [w for w in WORDS if w not in chars]
    vocab += chars + ["##" + c for c in chars]
    with open(os.path.join(folder, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "model_max_length": 16, "do_lower_case": True}, f)
    return len(vocab)


def write_tiny_blip(folder, arch="BlipForImageTextRetrieval", seed=0):
    import transformers

    os.makedirs(folder, exist_ok=True)
    n = _bert_vocab(folder)
    torch.manual_seed(seed)
    config = transformers.BlipConfig(
        text_config=dict(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, encoder_hidden_size=64,
                         pad_token_id=0, bos_token_id=2, sep_token_id=3, eos_token_id=3),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                           image_size=32, patch_size=8, initializer_range=0.1),  # BLIP default 1e-10: ~zero
        projection_dim=24, image_text_hidden_size=24)
    model = getattr(transformers, arch)(config).eval()
    _randomize(model)
    model.save_pretrained(folder)
    return str(folder)


def word_tokenizer(folder):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 12, "pad_token": "<pad>",
                   "eos_token": "</s>", "unk_token": "<unk>"}, f)
    return len(vocab)


def sentencepiece_tokenizer(folder):
    """A SiglipTokenizer (sentencepiece, as the released SigLIP models have) trained here on a few phrases."""
    import io

    import sentencepiece as spm

    phrases = ["a photo of a cat", "a photo of the small dog", "green grass and blue sky",
               "the remote control on a sofa", "a red car"]
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(phrases * 20), model_writer=proto, vocab_size=40,
                                   hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
                                   minloglevel=2)
    with open(os.path.join(folder, "spiece.model"), "wb") as f:
        f.write(proto.getvalue())
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "SiglipTokenizer", "model_max_length": 12}, f)
    return spm.SentencePieceProcessor(model_proto=proto.getvalue()).get_piece_size()


def write_tiny_siglip(folder, version=1, seed=0, tokenizer=word_tokenizer):
    import transformers

    os.makedirs(folder, exist_ok=True)
    n = tokenizer(folder)
    torch.manual_seed(seed)
    text = dict(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=12, projection_size=64)
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, patch_size=8)
    if version == 1:
        model = transformers.SiglipModel(transformers.SiglipConfig(
            text_config=text, vision_config=dict(vision, image_size=32)))
    else:
        model = transformers.Siglip2Model(transformers.Siglip2Config(
            text_config=text, vision_config=dict(vision, num_patches=16)))
    model.eval()
    _randomize(model)
    model.save_pretrained(folder)
    return str(folder)


# the backends of the end-to-end (CLI) tests, which run on the models of ``tiny_model_files``
BACKENDS = [
    pytest.param("open_clip", marks=[pytest.mark.openclip,
                                     pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")]),
    pytest.param("hf", marks=[pytest.mark.hf,
                              pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers not installed")]),
]
_NEEDS_HF = [pytest.mark.hf, pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers not installed")]
# every tiny backbone of the ``backbone`` fixture: the two CLIP backends, BLIP and SigLIP
BACKBONES = BACKENDS + [pytest.param("hf-blip", marks=_NEEDS_HF), pytest.param("hf-siglip", marks=_NEEDS_HF)]
_WRITERS = {"hf": write_tiny_hf, "hf-blip": write_tiny_blip, "hf-siglip": write_tiny_siglip}


@pytest.fixture(scope="session")
def _tiny_folders(tmp_path_factory):
    """A tiny model folder per Hugging Face backend, written once per session on first use."""
    root, folders = tmp_path_factory.mktemp("tiny_hf"), {}

    def get(kind):
        if kind not in folders:
            folders[kind] = _WRITERS[kind](root / kind)
        return folders[kind]
    return get


def _load_backbone(kind, folders):
    if kind == "open_clip":
        return tiny_open_clip_backbone()
    from gemseg.backbones import create_backbone

    return create_backbone(folders(kind), backend=kind)


@pytest.fixture(params=BACKBONES)
def backbone(request, _tiny_folders):
    """A tiny random backbone, once per backend (open_clip, HF CLIP, BLIP, SigLIP)."""
    return _load_backbone(request.param, _tiny_folders)


@pytest.fixture(params=BACKENDS)
def clip_backbone(request, _tiny_folders):
    """A tiny random CLIP backbone of open_clip and of HF CLIP (tests of CLIP-only properties)."""
    return _load_backbone(request.param, _tiny_folders)


# --- independent views of the third-party models, for reference computations in tests ----------------
def raw_block(backbone, i):
    """(ln_1, (Wq, bq), (Wk, bk), (Wv, bv), out_proj, ls_1, ln_2, mlp, ls_2, heads) of image block ``i``,
    read off the third-party module (open_clip's fused in_proj, BLIP's fused qkv, CLIP/SigLIP's q/k/v)."""
    ident = torch.nn.Identity()
    if hasattr(backbone.model, "visual"):  # open_clip
        blk = backbone.model.visual.transformer.resblocks[i]
        W, b = blk.attn.in_proj_weight, blk.attn.in_proj_bias
        C = W.shape[1]
        qkv = [(W[j * C:(j + 1) * C], b[j * C:(j + 1) * C]) for j in range(3)]
        return (blk.ln_1, *qkv, blk.attn.out_proj, blk.ls_1, blk.ln_2, blk.mlp, blk.ls_2, blk.attn.num_heads)
    layer = backbone.model.vision_model.encoder.layers[i]
    a = layer.self_attn
    if hasattr(a, "qkv"):  # BLIP: one linear, [q | k | v] along the features
        C = a.qkv.in_features
        W, b = a.qkv.weight, a.qkv.bias
        qkv, out = [(W[j * C:(j + 1) * C], b[j * C:(j + 1) * C]) for j in range(3)], a.projection
    else:
        qkv, out = [(p.weight, p.bias) for p in (a.q_proj, a.k_proj, a.v_proj)], a.out_proj
    return (layer.layer_norm1, *qkv, out, ident, layer.layer_norm2, layer.mlp, ident, a.num_heads)


def raw_head(backbone):
    """The final norm and projection [.., C] -> [.., D] from the third-party modules."""
    import torch.nn.functional as F

    if hasattr(backbone.model, "visual"):
        visual = backbone.model.visual
        return lambda y: visual.ln_post(y) @ visual.proj
    m = backbone.model
    vm = m.vision_model
    if hasattr(m, "vision_proj"):  # BLIP retrieval: its image-text contrast projection
        return lambda y: m.vision_proj(vm.post_layernorm(y))
    if hasattr(m, "visual_projection"):  # CLIP
        return lambda y: m.visual_projection(vm.post_layernorm(y))
    pool = vm.head  # SigLIP: the attention-pooling head with each token attended alone

    def siglip(y):
        u, attn = vm.post_layernorm(y), pool.attention
        C = u.shape[-1]
        r = attn.out_proj(F.linear(u, attn.in_proj_weight[2 * C:], attn.in_proj_bias[2 * C:]))
        return r + pool.mlp(pool.layernorm(r))
    return siglip


def library_trunk(backbone, images, upto):
    """Tokens entering image block ``upto``, through the third-party blocks' own forward. [B, N, C]"""
    import inspect

    x = backbone.embed(images)
    if hasattr(backbone.model, "visual"):
        transformer = backbone.model.visual.transformer
        batch_first = getattr(transformer, "batch_first", False)  # open_clip 2.2x: sequence-first
        x = x if batch_first else x.transpose(0, 1)
        for blk in transformer.resblocks[:upto]:
            x = blk(x)
        return x if batch_first else x.transpose(0, 1)
    for layer in backbone.model.vision_model.encoder.layers[:upto]:
        causal = "causal_attention_mask" in inspect.signature(layer.forward).parameters  # CLIP's layers only
        extra = {"causal_attention_mask": None} if causal else {}
        out = layer(x, attention_mask=None, **extra)
        x = out[0] if isinstance(out, tuple) else out
    return x


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
    """A random 2-block, 32-wide VFM of ``kind`` (see TINY_VFM; ``overrides`` change any timm keyword, e.g.
    ``embed_dim=64, num_heads=4``); MAE runs at 32x32, SAM at 64x64."""
    from gemseg.backbones.vfm import create_vfm

    name, kw = TINY_VFM[kind]
    torch.manual_seed(seed)
    extra = {"input_size": 32} if kind == "mae" else {}
    vfm = create_vfm(name, weights="random", **extra, **{"embed_dim": 32, "depth": 2, "num_heads": 2, **kw, **overrides})
    with torch.no_grad():  # timm starts some of these at constants; randomize so that tests can tell paths apart
        for pname, p in vfm.model.named_parameters():
            if pname.endswith(("cls_token", "reg_token", "pos_embed")):
                p.normal_(0, 0.5)
            elif pname.endswith("norm.weight") or pname.endswith("norm1.weight") or pname.endswith("norm2.weight"):
                p.uniform_(0.5, 1.5)
            elif pname.endswith(".bias"):
                p.normal_(0, 0.1)
    return vfm
