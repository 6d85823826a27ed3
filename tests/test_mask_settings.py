"""Masks a model generates by name default to CorrCLIP's run-time generator (every consumer of masks in gemseg
is CorrCLIP's scope or map correction); ``mask_settings`` overrides fields of it or replaces it whole."""
from __future__ import annotations

import pytest

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def sam_folder(tmp_path_factory):
    from mask_models import tiny_sam

    folder = tmp_path_factory.mktemp("sam")
    tiny_sam().save_pretrained(folder)
    return str(folder)


def test_create_model_generates_with_corrclips_settings_by_default(tiny_model_files, sam_folder):
    from gemseg import create_model
    from gemseg.masks import CORRCLIP_AMG, AMGConfig

    cfg, ckpt = tiny_model_files["open_clip"]
    model = create_model(cfg, checkpoint=ckpt, depth=3, masks=sam_folder)
    assert model.mask_source.config == CORRCLIP_AMG
    assert model.mask_source.config != AMGConfig()  # not the official generators' 32 x 32 defaults
    tuned = create_model(cfg, checkpoint=ckpt, depth=3, masks=sam_folder, mask_settings={"points_per_side": 4})
    assert tuned.mask_source.config.points_per_side == 4
    assert tuned.mask_source.config.pred_iou_thresh == CORRCLIP_AMG.pred_iou_thresh  # the rest kept
    whole = create_model(cfg, checkpoint=ckpt, depth=3, masks=sam_folder, mask_settings=AMGConfig())
    assert whole.mask_source.config == AMGConfig()


def test_the_mask_source_alone_keeps_the_official_defaults(sam_folder):
    from gemseg.masks import AMGConfig, create_mask_source

    assert create_mask_source(sam_folder).config == AMGConfig()


def test_an_unknown_or_bad_mask_setting_is_one_line(tiny_model_files, sam_folder):
    from gemseg import create_model

    cfg, ckpt = tiny_model_files["open_clip"]
    with pytest.raises(ValueError, match=r"unknown mask generator setting\(s\) points; valid: points_per_side"):
        create_model(cfg, checkpoint=ckpt, depth=3, masks=sam_folder, mask_settings={"points": 4})
    with pytest.raises(ValueError, match="points_per_side must be a positive integer"):
        create_model(cfg, checkpoint=ckpt, depth=3, masks=sam_folder, mask_settings={"points_per_side": 0})
    with pytest.raises(TypeError, match="mask settings must be an AMGConfig or a dict"):
        create_model(cfg, checkpoint=ckpt, depth=3, masks=sam_folder, mask_settings=[("points_per_side", 4)])
