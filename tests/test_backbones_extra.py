"""BLIP and SigLIP / SigLIP 2 backbones on tiny random models saved to disk and loaded through
``create_model`` (tokenizers built in code: a WordPiece vocabulary for BLIP, a ``tokenizers`` word-level
model for SigLIP, whose own sentencepiece model cannot be trained offline without sentencepiece)."""
from __future__ import annotations

import json
import os
import warnings

import pytest
import torch
import torch.nn.functional as F

import gemseg
from gemseg.backbones import list_models, resolve_backend
from gemseg.config import GEMConfig
from gemseg.methods import METHODS, get_method

from conftest import HAS_SENTENCEPIECE, HAS_TRANSFORMERS, sentencepiece_tokenizer, write_tiny_blip, write_tiny_siglip

pytestmark = [pytest.mark.hf, pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers not installed")]
torch.set_grad_enabled(False)

CFG = GEMConfig(depth=3)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="method .* ignores the GEM setting")
        yield


@pytest.fixture(scope="module")
def tiny_extra(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_extra")
    return {"blip": write_tiny_blip(root / "blip"), "blipmodel": write_tiny_blip(root / "blipmodel", "BlipModel"),
            "siglip": write_tiny_siglip(root / "siglip"), "siglip2": write_tiny_siglip(root / "siglip2", 2)}


def _load(folder):
    return gemseg.create_model(folder, depth=3)


def _dense_from_normed(bb, u):
    """The dense head applied to tokens that are already final-normed ([B, N, C])."""
    pool = bb.model.vision_model.head
    C = u.shape[-1]
    r = pool.attention.out_proj(F.linear(u, pool.attention.in_proj_weight[2 * C:], pool.attention.in_proj_bias[2 * C:]))
    return r + pool.mlp(pool.layernorm(r))


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------
def test_backends_are_resolved_from_ids_and_folders(tiny_extra):
    assert resolve_backend("Salesforce/blip-itm-base-coco") == "hf-blip"
    assert resolve_backend("google/siglip-base-patch16-224") == "hf-siglip"
    assert resolve_backend("google/siglip2-base-patch16-naflex") == "hf-siglip"
    assert resolve_backend("openai/clip-vit-base-patch16") == "hf"
    assert resolve_backend(tiny_extra["blip"]) == "hf-blip"
    assert resolve_backend(tiny_extra["siglip2"]) == "hf-siglip"
    assert resolve_backend("anything", "hf-siglip") == "hf-siglip"
    assert "Salesforce/blip-itm-base-coco" in {e.name for e in list_models("hf-blip")}
    assert "google/siglip-base-patch16-224" in {e.name for e in list_models("hf-siglip")}


def test_captioning_blip_and_clip_folders_are_rejected_clearly(tmp_path, tiny_model_files):
    folder = write_tiny_blip(tmp_path / "cap", "BlipForConditionalGeneration")
    with pytest.raises(ValueError, match="not a BLIP image-text retrieval checkpoint"):
        _load(folder)
    with pytest.raises(ValueError, match="not a SigLIP checkpoint"):
        gemseg.create_model(tiny_model_files["hf"], backend="hf-siglip", depth=3)
    with pytest.raises(ValueError, match="drop pretrained"):
        gemseg.create_model("google/siglip-base-patch16-224", pretrained="x")


# ---------------------------------------------------------------------------------------------
# BLIP
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["blip", "blipmodel"])
def test_blip_dense_tokens_are_the_models_own_projection(tiny_extra, kind):
    model = _load(tiny_extra[kind])
    bb, net = model.backbone, model.backbone.model
    assert bb.num_prefix_tokens == 1 and bb.patch_size == (8, 8)
    images = torch.randn(2, 3, 32, 32)
    tokens, _ = METHODS["clip"](bb, images, CFG)  # (2, 17, D)
    hidden = net.vision_model(pixel_values=images).last_hidden_state  # the model's own blocks, post-LN'd
    if kind == "blip":
        ref = net.vision_proj(hidden)
    else:
        ref = net.visual_projection(net.vision_model.post_layernorm(hidden))
        pooled = net.get_image_features(pixel_values=images)
        pooled = pooled.pooler_output if hasattr(pooled, "pooler_output") else pooled
        assert torch.allclose(tokens[:, 0], pooled, atol=1e-5)  # the class token is the image embedding
    assert torch.allclose(tokens, ref, atol=1e-5), (tokens - ref).abs().max()


def test_blip_retrieval_similarity_is_the_models_itc_score(tiny_extra):
    model = _load(tiny_extra["blip"])
    net, tok = model.backbone.model, model.backbone.tokenizer
    images = torch.randn(1, 3, 32, 32)
    prompts = ["a photo of a cat", "the red car"]
    text = model.encode_text(prompts, templates=["{}"])
    cls = F.normalize(METHODS["clip"](model.backbone, images, CFG)[0][:, 0], dim=-1)
    inputs = tok(prompts, padding=True, return_tensors="pt")
    itc = net(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], pixel_values=images,
              use_itm_head=False).itm_score  # (1, 2) cosine similarities
    assert torch.allclose(cls @ text.T, itc, atol=1e-5)


def test_blip_position_embeddings_resample_like_the_model(tiny_extra):
    model = _load(tiny_extra["blip"])
    images = torch.randn(1, 3, 48, 48)  # 6x6 grid from a 4x4 table
    ref = model.backbone.model.vision_model(pixel_values=images, interpolate_pos_encoding=True).last_hidden_state
    tokens, _ = METHODS["clip"](model.backbone, images, CFG)
    assert torch.allclose(tokens, model.backbone.model.vision_proj(ref), atol=1e-4)


# ---------------------------------------------------------------------------------------------
# SigLIP / SigLIP 2
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["siglip", "siglip2"])
def test_siglip_has_no_prefix_and_runs_the_models_own_encoder(tiny_extra, kind):
    model = _load(tiny_extra[kind])
    bb, vm = model.backbone, model.backbone.model.vision_model
    assert bb.num_prefix_tokens == 0 and bb.embed_dim == bb.width == 64
    images = torch.randn(2, 3, 40, 48)  # 5x6 grid: resampled position embeddings
    if kind == "siglip":
        ref = vm(pixel_values=images, interpolate_pos_encoding=True).last_hidden_state
    else:
        from transformers.models.siglip2.image_processing_siglip2 import convert_image_to_patches

        patches = torch.stack([convert_image_to_patches(im, 8) for im in images])  # the processor's order
        ref = vm(pixel_values=patches, pixel_attention_mask=torch.ones(2, 30, dtype=torch.long),
                 spatial_shapes=torch.tensor([[5, 6], [5, 6]])).last_hidden_state
    tokens, _ = METHODS["clip"](bb, images, CFG)
    assert tokens.shape == (2, 30, 64)
    assert torch.allclose(tokens, _dense_from_normed(bb, ref), atol=1e-4)


@pytest.mark.parametrize("kind", ["siglip", "siglip2"])
def test_siglip_dense_embedding_is_the_pooling_head_on_each_token_alone(tiny_extra, kind):
    bb = _load(tiny_extra[kind]).backbone
    vm = bb.model.vision_model
    x = torch.randn(2, 7, 64)
    dense = bb.head(x)  # (2, 7, 64)
    for i in range(7):
        alone = vm.head(vm.post_layernorm(x[:, i:i + 1]))  # the model's own attention pooling, one token
        assert torch.allclose(dense[:, i], alone, atol=1e-5), (i, (dense[:, i] - alone).abs().max())
    # before its MLP the pooled embedding mixes these per-token values with each head's attention weights
    pool, u = vm.head, vm.post_layernorm(x)
    attn, C, H = pool.attention, 64, pool.attention.num_heads
    pooled, w = attn(pool.probe.expand(2, 1, C), u, u, average_attn_weights=False)  # w: (2, H, 1, 7)
    v = F.linear(u, attn.in_proj_weight[2 * C:], attn.in_proj_bias[2 * C:]).reshape(2, 7, H, C // H)
    mixed = torch.einsum("bhn,bnhd->bhd", w[:, :, 0], v).reshape(2, C)
    assert torch.allclose(pooled[:, 0], attn.out_proj(mixed), atol=1e-5)


@pytest.mark.parametrize("kind", ["siglip", "siglip2"])
def test_siglip_text_is_padded_to_the_context_without_a_mask(tiny_extra, kind):
    model = _load(tiny_extra[kind])
    bb = model.backbone
    emb = bb.encode_text(["a photo of a cat", "grass"])
    ids = bb.tokenizer(["a photo of a cat", "grass"], padding="max_length", max_length=12,
                       return_tensors="pt")["input_ids"]
    assert ids.shape == (2, 12) and bb.context_length == 12
    assert torch.allclose(emb, bb.model.text_model(input_ids=ids).pooler_output, atol=1e-6)
    assert emb.shape == (2, 64) and torch.isfinite(emb).all()


@pytest.mark.skipif(not HAS_SENTENCEPIECE, reason="sentencepiece not installed (pip install gemseg[siglip])")
def test_siglip_with_its_sentencepiece_tokenizer(tmp_path):
    folder = write_tiny_siglip(tmp_path / "siglip-sp", tokenizer=sentencepiece_tokenizer)
    bb = _load(folder).backbone
    assert type(bb.tokenizer).__name__.startswith("Siglip") and bb.context_length == 12
    tok = bb.tokenizer
    texts = ["a photo of a cat.", "grass", "the small dog on a sofa and a red car on the green grass"]
    lengths, inputs = bb._tokenize(texts)
    ids = inputs["input_ids"]
    assert ids.shape == (3, 12) and lengths[2] > 12 >= max(lengths[:2])
    for row, n in zip(ids.tolist()[:2], lengths):  # the text, its end token, then padding to the context
        assert row[n - 1] == tok.eos_token_id and row[n:] == [tok.pad_token_id] * (12 - n)
        assert "<unk>" not in tok.convert_ids_to_tokens(row[:n])
    assert "cat" in tok.decode(ids[0], skip_special_tokens=True)
    with pytest.warns(UserWarning, match="truncated"):
        emb = bb.encode_text(texts)
    assert torch.allclose(emb, bb.model.text_model(input_ids=ids).pooler_output, atol=1e-6)
    assert not torch.allclose(emb[0], emb[1])


# ---------------------------------------------------------------------------------------------
# every method on every extra backbone
# ---------------------------------------------------------------------------------------------
# layer indices that a 4-block model has (the defaults are ViT-B/16's); SFP's SOM needs a class token
TINY_SETTINGS = {"sc-clip": dict(pre_adjust=1, post_adjust=0, multi_start=0, multi_end=2, res_cls=0.3, lof_neighbors=5),
                 "sfp": dict(cross_start=0, cross_end=3, ref_layer=2, aux_layer=0, outliers="l2"),
                 **{f"{b}+resclip": dict(rcs_layers=(1, 2)) for b in ("sclip", "clearclip", "naclip", "clip", "gem", "vv")}}


@pytest.mark.parametrize("kind", ["blip", "blipmodel", "siglip", "siglip2"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_on_blip_and_siglip(tiny_extra, kind, method):
    from conftest import tiny_vfm
    from gemseg.methods import ProxyAttention

    fn = get_method(method)
    # a proxy holder around a tiny DINO (patch 8: the same grid) for the methods that need one
    dino = tiny_vfm("dino", embed_dim=64, num_heads=4) if method == "cass" else tiny_vfm("dino")  # CASS: CLIP's heads
    proxy = fn.proxy_type(dino) if "proxy" in fn.needs and method != "trident" else None
    if method == "trident":  # DINO + a tiny SAM; its tokens lie on SAM's grid
        from gemseg.methods.trident import TridentConfig, TridentProxy
        from test_trident import tiny_sam

        proxy = TridentProxy(tiny_vfm("dino"), tiny_sam(), TridentConfig(crop=32, stride=16))
    model = gemseg.GEMModel(_load(tiny_extra[kind]).backbone, config=CFG, method=method, proxy=proxy,
                            method_settings=TINY_SETTINGS.get(method))
    images = torch.randn(2, 3, 37, 45)  # padded to 40x48: a 5x6 grid
    text = model.encode_text(["a cat", "the sky"]) if "text" in get_method(method).needs else None  # ResCLIP
    masks = None
    if "masks" in fn.needs:  # CorrCLIP: two class-agnostic regions and the rest
        masks = torch.zeros(2, 37, 45, dtype=torch.long)
        masks[:, :20, :20], masks[:, 20:, 25:] = 1, 2
    if method == "corrclip" and kind.startswith("siglip"):  # its mask class tokens copy CLIP's class token
        with pytest.raises(ValueError, match="class-token ViT"):
            model.encode_image(images, masks=masks)
        return
    feats = model.encode_image(images, text=text, masks=masks)
    grid = proxy.grid((37, 45)) if method == "trident" else (5, 6)
    assert feats.shape == (2, model.backbone.embed_dim, *grid) and torch.isfinite(feats).all()
    sims = model.heatmaps(images, ["a cat", "the sky"], masks=masks)
    assert sims.shape == (2, 2, 37, 45) and torch.isfinite(sims).all()
    if method == "clip":
        gem0 = gemseg.GEMModel(model.backbone, config=GEMConfig(depth=0))
        assert torch.allclose(feats, gem0.encode_image(images), atol=1e-5)


def test_siglip_preprocessing_comes_from_the_image_processor_config(tmp_path):
    folder = write_tiny_siglip(tmp_path / "sig")
    bb = _load(folder).backbone
    assert (bb.preprocess.mean, bb.preprocess.std, bb.preprocess.interpolation) == ((0.5,) * 3, (0.5,) * 3, "bicubic")
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump({"image_processor_type": "SiglipImageProcessor", "image_mean": [0.4, 0.4, 0.4],
                   "image_std": [0.3, 0.3, 0.3], "resample": 2, "size": {"height": 32, "width": 32}}, f)
    p = _load(folder).backbone.preprocess
    assert (p.mean, p.std, p.interpolation, p.image_size) == ((0.4,) * 3, (0.3,) * 3, "bilinear", (32, 32))
