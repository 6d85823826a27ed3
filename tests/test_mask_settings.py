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


def _kwargs(*argv):
    import argparse

    from gemseg.cli.common import add_model_args, model_kwargs

    parser = argparse.ArgumentParser()
    add_model_args(parser)
    return model_kwargs(parser.parse_args(["--device", "cpu", *argv]))


def test_mask_setting_flag_gives_the_fields_it_names(sam_folder):
    one = _kwargs("--masks", sam_folder, "--mask-setting", "points_per_side=4,pred_iou_thresh=0.5,multimask_output=on")
    many = _kwargs("--masks", sam_folder, "--mask-setting", "points_per_side=4", "--mask-setting",
                   "pred_iou_thresh=0.5", "--mask-setting", "multimask_output=on")
    assert one["mask_settings"] == many["mask_settings"] == {"points_per_side": 4, "pred_iou_thresh": 0.5,
                                                             "multimask_output": True}
    assert "mask_settings" not in _kwargs("--masks", sam_folder)  # create_model's default: CorrCLIP's
    with pytest.raises(ValueError, match="--mask-setting needs --masks SOURCE"):
        _kwargs("--mask-setting", "points_per_side=4")
    with pytest.raises(ValueError, match=r"--mask-setting 'points=4': expected NAME=VALUE with NAME one of "
                                         r"points_per_side, points_per_batch"):
        _kwargs("--masks", sam_folder, "--mask-setting", "points=4")


def test_segment_refuses_a_bad_mask_setting_in_one_line(tmp_path, capsys, tiny_model_files, sam_folder):
    from cli_util import model_args, run_cli, write_image

    image = write_image(tmp_path / "photo.png")
    r = run_cli(capsys, "segment", image, "-c", "cat", "--masks", sam_folder, "--refine", "masks",
                "--mask-setting", "points_per_side=zero", "-o", tmp_path / "out", *model_args(tiny_model_files))
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "--mask-setting 'points_per_side=zero'" in r.err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.png"))


def test_an_evaluation_tells_runs_with_other_masks_apart(tiny_model_files, sam_folder, tmp_path):
    from gemseg import create_model
    from gemseg.eval.report import model_description

    cfg, ckpt = tiny_model_files["open_clip"]
    plain = model_description(create_model(cfg, checkpoint=ckpt, depth=3))
    corr = model_description(create_model(cfg, checkpoint=ckpt, depth=3, masks=sam_folder))
    fewer = model_description(create_model(cfg, checkpoint=ckpt, depth=3, masks=sam_folder,
                                           mask_settings={"points_per_side": 4}))
    cached = model_description(create_model(cfg, checkpoint=ckpt, depth=3, masks=sam_folder,
                                            mask_cache=str(tmp_path / "cache")))
    files = model_description(create_model(cfg, checkpoint=ckpt, depth=3, masks=f"files:{tmp_path}"))
    assert "masks" not in plain
    assert corr["masks"]["points_per_side"] == 8 and fewer["masks"]["points_per_side"] == 4
    assert corr != fewer  # a resumed evaluation with other generator settings is another run
    assert cached == corr  # the cache folder does not change the masks
    assert files["masks"] == {"kind": "files", "folder": str(tmp_path)}


def test_corrclip_defaults_to_its_own_generator_on_the_command_line():
    # zdk258/CorrCLIP@103bc18213e6:CorrCLIPv1/corrclip_segmentor.py:264 builds SAM 2 Hiera-L
    assert _kwargs("--method", "corrclip")["masks"] == "sam2-hiera-l"
    random = _kwargs("--method", "corrclip", "--random-weights")
    assert random["masks"] == "sam2-hiera-l" and random["mask_weights"] == "random"
    assert _kwargs("--method", "corrclip", "--masks", "files:x")["masks"] == "files:x"  # a given source wins
    assert "masks" not in _kwargs("--method", "naclip")  # no method of its own, no masks
