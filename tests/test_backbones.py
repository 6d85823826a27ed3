"""Loading models by name, config, folder and checkpoint; bad input and missing weights."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

import gemseg
from gemseg.backbones import list_models, register_model, resample_pos_embed, resolve_backend
from gemseg.backbones.weights import load_state_dict
from conftest import HAS_OPEN_CLIP, HAS_TRANSFORMERS, tiny_open_clip_backbone

needs_open_clip = pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
needs_hf = pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers not installed")


def test_resample_pos_embed_is_identity_on_the_native_grid_and_bicubic_otherwise():
    pos = torch.randn(1 + 4 * 4, 8)
    assert resample_pos_embed(pos, old_grid=(4, 4), new_grid=(4, 4)) is pos
    out = resample_pos_embed(pos, old_grid=(4, 4), new_grid=(6, 3))
    assert out.shape == (1 + 18, 8)
    assert torch.equal(out[0], pos[0])  # class token embedding kept
    grid = pos[1:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
    expect = torch.nn.functional.interpolate(grid, size=(6, 3), mode="bicubic", antialias=True)
    assert torch.allclose(out[1:], expect.permute(0, 2, 3, 1).reshape(18, 8), atol=1e-6)
    with pytest.raises(ValueError, match="grid"):
        resample_pos_embed(pos, old_grid=(3, 3), new_grid=(5, 5))


def test_resolve_backend():
    assert resolve_backend("ViT-B/16") == "open_clip"
    assert resolve_backend("ViT-L-14-336") == "open_clip"
    assert resolve_backend("hf-hub:timm/foo") == "open_clip"
    assert resolve_backend("openai/clip-vit-base-patch16") == "hf"
    assert resolve_backend("facebook/metaclip-b16-400m") == "hf"
    assert resolve_backend("anything", "hf") == "hf"
    with pytest.raises(ValueError, match="unknown backend 'timm'; choose from auto, open_clip, hf, hf-blip, hf-sig"):
        resolve_backend("ViT-B/16", "timm")


@needs_open_clip
def test_open_clip_config_and_safetensors_checkpoint_round_trip(tiny_model_files):
    cfg, ckpt = tiny_model_files["open_clip"]
    model = gemseg.create_model(cfg, checkpoint=ckpt, depth=3)
    ref = gemseg.GEMModel(tiny_open_clip_backbone(), config=gemseg.GEMConfig(depth=3))
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(model.encode_image(x), ref.encode_image(x))
    assert model.backbone.pretrained == ckpt


@needs_open_clip
def test_torch_checkpoint_loads_weights_only(tiny_model_files, tmp_path):
    cfg, _ = tiny_model_files["open_clip"]
    state = tiny_open_clip_backbone().model.state_dict()
    good = tmp_path / "w.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, good)
    gemseg.create_model(cfg, checkpoint=str(good), depth=2)

    class Evil:  # a pickle that would run code if unpickled without weights_only
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(ValueError, match="cannot be read as a torch weights file"):
        load_state_dict(str(bad))


@needs_open_clip
def test_checkpoint_that_does_not_fit_is_rejected(tiny_model_files, tmp_path):
    cfg, _ = tiny_model_files["open_clip"]
    state = tiny_open_clip_backbone().model.state_dict()
    state["visual.proj"] = torch.zeros(3, 3)
    path = tmp_path / "wrong.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match="does not fit .*shape mismatch.*visual.proj"):
        gemseg.create_model(cfg, checkpoint=str(path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gemseg.create_model(cfg, checkpoint=str(tmp_path / "missing.pt"))


@needs_open_clip
def test_unknown_open_clip_model_suggests_close_names():
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-B-61'.*did you mean.*ViT-B-16"):
        gemseg.create_model("ViT-B-61", pretrained="openai")
    with pytest.raises(ValueError, match="no pretrained tag 'opnai'.*openai"):
        gemseg.create_model("ViT-B-16", pretrained="opnai")


@needs_open_clip
def test_missing_weights_offline_is_one_clear_line():
    with pytest.raises(gemseg.WeightsUnavailableError) as info:
        gemseg.create_model("ViT-B-32", pretrained="laion2b_s34b_b79k")
    msg = str(info.value)
    assert "\n" not in msg
    assert "ViT-B-32" in msg and "checkpoint" in msg and "HF_HOME" in msg


@needs_hf
def test_missing_hf_model_offline_is_one_clear_line(tmp_path):
    with pytest.raises(gemseg.WeightsUnavailableError) as info:
        gemseg.create_model("openai/clip-vit-base-patch16", cache_dir=str(tmp_path))
    assert "\n" not in str(info.value) and "openai/clip-vit-base-patch16" in str(info.value)


@needs_open_clip
def test_non_vit_open_clip_model_is_rejected():
    import open_clip

    from gemseg.backbones.open_clip import OpenCLIPBackbone

    resnet = open_clip.CLIP(embed_dim=32, vision_cfg={"image_size": 32, "layers": [1, 1, 1, 1], "width": 16},
                            text_cfg={"context_length": 8, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1})
    with pytest.raises(ValueError, match="not a class-token ViT"):
        OpenCLIPBackbone(resnet, None, name="tiny-resnet")


@needs_hf
def test_non_clip_hf_model_is_rejected():
    from transformers import BertConfig, BertModel

    from gemseg.backbones.hf_clip import HFCLIPBackbone

    bert = BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    with pytest.raises(ValueError, match="expected a transformers CLIPModel"):
        HFCLIPBackbone(bert, None, name="bert")


def test_bad_images_and_prompts_raise_clear_errors(backbone):
    model = gemseg.GEMModel(backbone, config=gemseg.GEMConfig(depth=2))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\].*add a batch dimension"):
        model.heatmaps(torch.randn(3, 32, 32), ["cat"])
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model.heatmaps(torch.randn(1, 1, 32, 32), ["cat"])
    with pytest.raises(ValueError, match="smaller than one"):
        model.heatmaps(torch.randn(1, 3, 4, 32), ["cat"])
    with pytest.raises(ValueError, match="prompt list is empty"):
        model.heatmaps(torch.randn(1, 3, 32, 32), [])
    with pytest.raises(ValueError, match="prompt 2 is empty"):  # counted from 1, as everywhere
        model.encode_text(["cat", "  "])
    with pytest.raises(TypeError, match="not a single string"):
        model.encode_text("cat")
    with pytest.raises(ValueError, match="2 prompt lists for 1 images"):
        model.heatmaps(torch.randn(1, 3, 32, 32), [["cat"], ["dog"]])
    with pytest.raises(ValueError, match="equal lengths"):
        model.heatmaps(torch.randn(2, 3, 32, 32), [["cat"], ["dog", "cow"]])
    with pytest.raises(ValueError, match="text embeddings must be"):
        model.heatmaps(torch.randn(1, 3, 32, 32), torch.randn(2, 5))
    with pytest.raises(ValueError, match="template"):
        model.encode_text(["cat"], templates=["a photo"])
    with pytest.raises(ValueError, match="depth 9 needs 8 blocks"):
        gemseg.GEMModel(backbone, config=gemseg.GEMConfig(depth=9))


def test_gem_config_validation():
    with pytest.raises(ValueError, match="projections"):
        gemseg.GEMConfig(projections=("x",))
    with pytest.raises(ValueError, match="temperature"):
        gemseg.GEMConfig(temperature=0.0)
    with pytest.raises(ValueError, match="iterations"):
        gemseg.GEMConfig(iterations=-1)
    assert gemseg.GEMConfig(depth=7).num_blocks == 6 and gemseg.GEMConfig(depth=0).num_blocks == 0


def test_long_prompts_are_truncated_with_a_warning(backbone):
    model = gemseg.GEMModel(backbone, config=gemseg.GEMConfig(depth=2))
    long = " ".join(["elephant"] * 80)
    with pytest.warns(UserWarning, match="truncated"):
        emb = model.encode_text([long, "naïve café 猫"])
    assert emb.shape == (2, backbone.embed_dim) and torch.isfinite(emb).all()


@needs_open_clip
def test_registered_models_are_listed_and_built():
    register_model("my-tiny", lambda **kw: tiny_open_clip_backbone())
    assert any(e.name == "my-tiny" and e.backend == "user" for e in list_models())
    model = gemseg.create_model("my-tiny", depth=2)
    assert model.heatmaps(torch.randn(1, 3, 32, 32), ["cat"]).shape == (1, 1, 32, 32)


@needs_open_clip
def test_list_models_covers_the_reference_models():
    entries = {(e.name, e.pretrained) for e in list_models("open_clip")}
    for name, tag in [("ViT-B-32", "openai"), ("ViT-B-16", "openai"), ("ViT-B-16", "laion2b_s34b_b88k"),
                      ("ViT-B-16-plus-240", "laion400m_e32"), ("ViT-L-14", "openai"), ("ViT-L-14-336", "openai"),
                      ("ViT-B-16-quickgelu", "metaclip_400m")]:
        assert (name, tag) in entries
    assert not any(name.startswith("RN") or "SigLIP" in name or "coca" in name for name, _ in entries)
    assert {e.name for e in list_models("hf")} >= {"openai/clip-vit-base-patch16", "facebook/metaclip-b16-400m"}


def _full_context_text_embeddings(backbone, texts):
    """The library's own text forward on inputs padded to the whole context."""
    with torch.no_grad():
        if hasattr(backbone.model, "text_model"):  # transformers CLIPModel
            inputs = backbone.tokenizer(texts, padding="max_length", truncation=True,
                                        max_length=backbone.context_length, return_tensors="pt")
            pooled = backbone.model.text_model(input_ids=inputs["input_ids"],
                                               attention_mask=inputs["attention_mask"]).pooler_output
            return backbone.model.text_projection(pooled)
        return backbone.model.encode_text(backbone.tokenizer(texts))


def test_text_runs_only_up_to_the_end_token_and_matches_the_full_context(clip_backbone):
    backbone = clip_backbone  # CLIP's causal text towers pool at the end token
    texts = ["cat", "a photo of a remote control.", "dog"]
    if hasattr(backbone.model, "text_model"):
        assert backbone._tokenize(texts)[1]["input_ids"].shape[1] < backbone.context_length
    else:
        assert backbone.text_blocks is not None  # the shortened causal path is the one under test
    with torch.no_grad():
        ours = backbone.encode_text(texts)
    full = _full_context_text_embeddings(backbone, texts)
    assert ours.shape == full.shape == (3, backbone.embed_dim)
    assert torch.allclose(ours, full, atol=1e-5), (ours - full).abs().max()
    # one text alone gets the same embedding as inside a batch of longer ones
    with torch.no_grad():
        assert torch.allclose(backbone.encode_text(["cat"])[0], ours[0], atol=1e-5)


@needs_open_clip
@pytest.mark.openclip
def test_other_open_clip_text_towers_run_the_models_own_forward():
    from gemseg.backbones.open_clip import OpenCLIPBackbone

    model = tiny_open_clip_backbone().model
    model.text_pool_type = "last"  # pooled at the last position: the padding matters, nothing is dropped
    backbone = OpenCLIPBackbone(model, tiny_open_clip_backbone().tokenizer, name="tiny")
    assert backbone.text_blocks is None
    with torch.no_grad():
        ours = backbone.encode_text(["cat", "a dog"])
        assert torch.equal(ours, model.encode_text(backbone.tokenizer(["cat", "a dog"])))


@needs_open_clip
@pytest.mark.openclip
def test_open_clip_text_pooled_at_an_eos_id_takes_the_short_path_too():
    import copy

    from gemseg.backbones.open_clip import OpenCLIPBackbone

    argmax = tiny_open_clip_backbone()
    model = copy.deepcopy(argmax.model)
    model.text_pool_type, model.text_eos_id = "eos", int(argmax.tokenizer(["cat"])[0].max())  # CLIP's end token
    eos = OpenCLIPBackbone(model, argmax.tokenizer, name="tiny")
    assert eos.text_blocks is not None
    texts = ["cat", "a photo of a dog."]
    with torch.no_grad():
        assert torch.allclose(eos.encode_text(texts), argmax.encode_text(texts), atol=1e-6)
    model.text_eos_id = None  # 'eos' pooling without an id: the model's own forward decides
    assert OpenCLIPBackbone(model, argmax.tokenizer, name="tiny").text_blocks is None
