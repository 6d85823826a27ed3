"""One registry of SAM / SAM 2 names and one loader (gemseg.backbones.sam): Trident's encoder, the
"sam-prompts" refiner and the mask generators of gemseg.masks share the model of one checkpoint."""
from __future__ import annotations

import gc

import pytest
import torch

from conftest import tiny_vfm
from gemseg.backbones.sam import (SAM_ALIASES, SAM_MODELS, create_sam, list_sam_models, load_sam_model, resolve_sam,
                                  sam_cache_info)

pytest.importorskip("transformers")


def test_one_naming_scheme_and_the_old_spelling_as_an_alias():
    from gemseg.masks import MASK_MODELS, list_mask_models, resolve_mask_model
    from gemseg.methods.trident import TridentConfig

    assert MASK_MODELS is SAM_MODELS and [e.name for e in list_mask_models()] == [e.name for e in list_sam_models()]
    assert TridentConfig().sam == "sam-vit-b" and "sam-b" not in SAM_MODELS
    for alias, name in SAM_ALIASES.items():  # the names Trident's encoder had first still work, in both users
        assert name in SAM_MODELS and resolve_sam(alias) == resolve_sam(name) == resolve_mask_model(alias)
    assert resolve_sam("sam-b") == ("facebook/sam-vit-base", "sam")
    assert resolve_sam("facebook/sam2-hiera-tiny") == ("facebook/sam2-hiera-tiny", None)  # a hub id: family from its config
    with pytest.raises(TypeError, match="non-empty string"):
        resolve_sam("")


def test_missing_weights_offline_are_one_line_under_either_spelling():
    from gemseg import WeightsUnavailableError

    for name in ("sam-b", "sam-vit-b"):  # not in this machine's hub cache; tests run with HF_HUB_OFFLINE=1
        with pytest.raises(WeightsUnavailableError) as e:
            create_sam(name)
        assert "\n" not in str(e.value) and "facebook/sam-vit-base" in str(e.value) and name in str(e.value)


def test_trident_and_the_mask_generator_read_one_checkpoint_once(tmp_path):
    from mask_models import tiny_sam

    from gemseg.masks import AMGConfig, create_mask_source
    from gemseg.methods.trident import TridentConfig, build_trident_proxy

    folder = tmp_path / "sam"
    tiny_sam().save_pretrained(folder)
    before = sam_cache_info()
    proxy = build_trident_proxy(tiny_vfm("dino", seed=1, patch_size=4), TridentConfig(sam=str(folder)))
    corrclip = AMGConfig(points_per_side=8, multimask_output=False, dynamic_multimask=False)  # SAM has no such switch
    source = create_mask_source(str(folder), settings=corrclip)  # --masks FOLDER beside --method trident
    refiner_sam = create_sam(str(folder) + "/")  # refine=("sam-prompts", {"sam": ...}), spelled another way
    after = sam_cache_info()
    assert after["loads"] - before["loads"] == 1 and after["hits"] - before["hits"] == 2
    assert source.prompter.model is proxy.sam.model is refiner_sam.model
    assert source.prompter.device == torch.device("cpu") and not proxy.sam.model.training


def test_a_model_nobody_holds_is_freed_and_read_again(tmp_path):
    from mask_models import tiny_sam2

    folder = str(tmp_path / "sam2")
    tiny_sam2().save_pretrained(folder)
    start = sam_cache_info()["loads"]
    model = load_sam_model(folder)
    assert load_sam_model(folder) is model and sam_cache_info()["loads"] == start + 1
    other = load_sam_model(folder, dynamic_multimask=False)  # another config: another model
    assert other is not model and not other.config.mask_decoder_config.dynamic_multimask_via_stability
    del model, other
    gc.collect()
    load_sam_model(folder)
    assert sam_cache_info()["loads"] == start + 3
    with pytest.raises(ValueError, match="SAM 2 checkpoint.*sam-vit-b"):
        create_sam(folder)  # Trident's encoder needs SAM, not SAM 2


def test_random_weights_are_never_shared():
    from mask_models import tiny_sam

    config = tiny_sam().config
    a = create_sam("tiny", weights="random", config=config)
    b = create_sam("tiny", weights="random", config=config)
    assert a.model is not b.model and a.pretrained is None
    with pytest.raises(ValueError, match="'pretrained' or 'random'"):
        load_sam_model("sam-vit-b", weights="imagenet")
