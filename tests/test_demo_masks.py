"""The web demo's masks choice (gemseg.demo.logic, gemseg.demo.checks): none, the server's mask source (a tiny
random SAM generator given at launch) for corrclip, or that source and the "masks" refiner after any method."""
from __future__ import annotations

import pytest

from conftest import tiny_vfm
from demo_helpers import png_bytes
from gemseg import GEMConfig, GEMModel
from gemseg.demo import checks, logic

pytest.importorskip("transformers")

KW = dict(background="none", threshold=0, size=(32, 32), limits=logic.Limits(max_side=64))


class Counted:
    """A mask source counting its calls: a tiny random SAM's automatic masks (4 x 4 points, no filtering)."""

    def __init__(self):
        from mask_models import tiny_sam

        from gemseg.masks import AMGConfig, MaskGenerator, SamPrompter

        settings = AMGConfig(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
        self.inner = MaskGenerator(SamPrompter(tiny_sam(), name="tiny-sam", source=None), settings)
        self.calls = 0

    def describe(self) -> dict:
        return self.inner.describe()

    def __call__(self, image, path=None):
        self.calls += 1
        return self.inner(image, path)


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "up.png"
    path.write_bytes(png_bytes(40, 32, 0))
    return str(path)


def test_the_choices_name_the_servers_generator(clip_backbone):
    plain = GEMModel(clip_backbone, config=GEMConfig(depth=3), method="gem")
    assert logic.mask_choices(plain) == [("none", "none")] and logic.default_masks(plain, ("masks",)) == "none"
    served = GEMModel(clip_backbone, config=GEMConfig(depth=3), method="gem", masks=Counted())
    choices = logic.mask_choices(served)
    assert [v for _, v in choices] == list(logic.MASK_CHOICES) and all("tiny-sam" in lab for lab, _ in choices[1:])
    assert logic.default_masks(served) == "masks" and logic.default_masks(served, ("pamr", "masks")) == "masks+refine"
    assert logic.request_refiners("masks+refine", ("pamr",)) == ("pamr", "masks")
    assert logic.request_refiners("none", ("masks", "pamr")) == ("pamr",)
    assert logic.request_refiners(None, ("masks",)) == logic.request_refiners("masks", ("masks",)) == ("masks",)


def test_the_masks_refiner_runs_for_any_method_when_chosen(clip_backbone, picture):
    source = Counted()
    served = GEMModel(clip_backbone, config=GEMConfig(depth=3), method="gem", masks=source)
    plain = logic.run(served, picture, "cat, dog", "segmentation", masks="masks", **KW)
    assert plain.segmentation is not None and source.calls == 0  # gem needs no masks: none are made
    refined = logic.run(served, picture, "cat, dog", "segmentation", masks="masks+refine", **KW)
    assert source.calls == 1
    launched = logic.run(served, picture, "cat, dog", "segmentation", refine=("masks",), **KW)  # --refine masks
    assert source.calls == 2 and refined.rows() == launched.rows()  # the same refiner on the same masks
    off = logic.run(served, picture, "cat, dog", "segmentation", masks="none", refine=("masks",), **KW)
    assert source.calls == 2 and off.rows() == plain.rows()  # "none" drops the server's masks refiner
    heat = logic.run(served, picture, "cat", "heatmaps", masks="masks+refine", **KW)
    assert heat.heatmaps and any("segmentations only" in w for w in heat.warnings)


def test_corrclip_takes_the_servers_masks_and_is_refused_without(clip_backbone, picture):
    from gemseg.methods.corrclip import CorrCLIPProxy

    source = Counted()
    served = GEMModel(clip_backbone, method="corrclip", proxy=CorrCLIPProxy(tiny_vfm("dino", seed=1, patch_size=4)),
                      masks=source)
    assert logic.run(served, picture, "cat, dog", "segmentation", masks="masks", **KW).segmentation is not None
    assert source.calls == 1
    with pytest.raises(logic.DemoError, match="'corrclip' needs class-agnostic masks: choose tiny-sam under masks"):
        logic.model_for(served, masks="none")
    bare = GEMModel(clip_backbone, config=GEMConfig(depth=3), method="gem")
    for masks in ("masks", "masks+refine"):
        with pytest.raises(logic.DemoError, match="no class-agnostic masks; start it with --masks SOURCE"):
            logic.model_for(bare, masks=masks)
    with pytest.raises(logic.DemoError, match="unknown masks choice 'sam'"):
        logic.model_for(served, masks="sam")


@pytest.mark.parametrize("value", ["sam-vit-b", "x" * 10_000, 3, ["none"], ""])
def test_a_bad_masks_value_is_one_line(value):
    with pytest.raises(logic.DemoError) as e:
        checks.request("cat", "heatmaps", "auto", 0.5, None, None, None, value, methods=["gem"], max_depth=3,
                       limits=logic.Limits())
    assert "\n" not in str(e.value) and "masks choice" in str(e.value) and len(str(e.value)) < 200
    assert checks.request("cat", "heatmaps", "auto", 0.5, None, None, None, None, methods=["gem"], max_depth=3,
                          limits=logic.Limits())["masks"] is None
