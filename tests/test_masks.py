"""Class-agnostic masks (gemseg.masks): every step of the automatic mask generator against a plain
implementation written from facebookresearch/segment-anything and sam2 (utils/amg.py,
automatic_mask_generator.py), the whole generator on tiny random SAM / SAM 2 models and on a synthetic
prompter, the published mask files, the disk cache and the loading errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import HAS_TRANSFORMERS
from gemseg.masks import (AMGConfig, CachedMasks, FileMasks, MaskGenerator, MaskSet, SamPrompter, create_mask_source,
                          generate_masks)
from gemseg.masks.amg import box_nms, build_point_grid, crop_boxes, masks_to_boxes, near_crop_edge, stability_score

needs_hf = pytest.mark.skipif(not HAS_TRANSFORMERS, reason="the tiny SAM models need transformers")


# --- plain references, written from the official code -------------------------------------------------
def ref_grid(n):
    off = 1 / (2 * n)
    side = [off + i * (1 - 2 * off) / (n - 1) for i in range(n)] if n > 1 else [0.5]
    return [(side[j], side[i]) for i in range(n) for j in range(n)]  # x fastest


def ref_stability(logit, t, o):
    flat = logit.flatten().tolist()
    return sum(v > t + o for v in flat) / sum(v > t - o for v in flat)


def ref_box(mask):
    H, W = mask.shape
    ys = [y for y in range(H) if any(mask[y].tolist())]
    xs = [x for x in range(W) if any(mask[:, x].tolist())]
    return [min(xs), min(ys), max(xs), max(ys)] if ys else [0, 0, 0, 0]


def ref_iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else float("nan")


def ref_nms(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(not ref_iou(boxes[i], boxes[j]) > thr for j in keep):
            keep.append(i)
    return keep


def ref_near_edge(box, crop, W, H, atol=20):
    b = [box[0] + crop[0], box[1] + crop[1], box[2] + crop[0], box[3] + crop[1]]
    img = [0, 0, W, H]
    return any(abs(b[i] - crop[i]) <= atol and not abs(b[i] - img[i]) <= atol for i in range(4))


def ref_generate(prompter, image, cfg, iou_thresh):
    """The official generator as plain loops: per crop, per point, per mask output."""
    H, W = image.shape[:2]
    boxes, layers = crop_boxes((H, W), cfg.crop_n_layers, cfg.crop_overlap_ratio)
    kept = []  # (mask [H, W] bool, iou, box, crop area)
    for crop, layer in zip(boxes, layers):
        x0, y0, x1, y1 = crop
        state = prompter.embed(np.ascontiguousarray(image[y0:y1, x0:x1]))
        n = int(cfg.points_per_side / cfg.crop_n_points_downscale_factor ** layer)
        cands = []
        for gx, gy in ref_grid(n):
            pt = torch.tensor([[gx * (x1 - x0), gy * (y1 - y0)]], dtype=torch.float64)
            logits, ious = prompter.predict(state, pt, multimask=cfg.multimask_output)
            for k in range(logits.shape[1]):
                lg, iou = logits[0, k], float(ious[0, k])
                if iou_thresh > 0 and not iou > iou_thresh:
                    continue
                if cfg.stability_score_thresh > 0 and not ref_stability(lg, cfg.mask_threshold,
                                                                         cfg.stability_score_offset) >= cfg.stability_score_thresh:
                    continue
                m = lg > cfg.mask_threshold
                box = ref_box(m)
                if ref_near_edge(box, crop, W, H):
                    continue
                cands.append((m, iou, box))
        keep = ref_nms([c[2] for c in cands], [c[1] for c in cands], cfg.box_nms_thresh)
        for i in keep:
            m, iou, box = cands[i]
            full = torch.zeros(H, W, dtype=torch.bool)
            full[y0:y1, x0:x1] = m
            kept.append((full, iou, [box[0] + x0, box[1] + y0, box[2] + x0, box[3] + y0], (x1 - x0) * (y1 - y0)))
    if len(boxes) > 1:
        keep = ref_nms([k[2] for k in kept], [1 / k[3] for k in kept], cfg.crop_nms_thresh)
        kept = [kept[i] for i in keep]
    return kept


def ref_components(mask):
    """8-connected components of a [H, W] bool tensor by breadth-first search: a list of pixel lists."""
    H, W = mask.shape
    seen, comps = set(), []
    for y in range(H):
        for x in range(W):
            if not mask[y, x] or (y, x) in seen:
                continue
            comp, todo = [], [(y, x)]
            seen.add((y, x))
            while todo:
                cy, cx = todo.pop()
                comp.append((cy, cx))
                for ny in range(max(cy - 1, 0), min(cy + 2, H)):
                    for nx in range(max(cx - 1, 0), min(cx + 2, W)):
                        if mask[ny, nx] and (ny, nx) not in seen:
                            seen.add((ny, nx))
                            todo.append((ny, nx))
            comps.append(comp)
    return comps


def ref_fill(mask, area):
    """Holes, then islands, of fewer than ``area`` pixels (remove_small_regions): (new mask, changed)."""
    mask = mask.clone()
    small = [c for c in ref_components(~mask) if len(c) < area]
    for c in small:
        for y, x in c:
            mask[y, x] = True
    islands = ref_components(mask)
    tiny = [len(c) < area for c in islands]
    if any(tiny):
        big = [c for c, t in zip(islands, tiny) if not t] or [max(islands, key=len)]
        mask = torch.zeros_like(mask)
        for c in big:
            for y, x in c:
                mask[y, x] = True
    return mask, bool(small) or any(tiny)


def ref_postprocess(kept, area, thr):
    """postprocess_small_regions on ref_generate's output: every mask filled, then NMS preferring unchanged:
    [(mask, iou, changed)]."""
    new = [(ref_fill(m, area), iou) for m, iou, _, _ in kept]
    keep = ref_nms([ref_box(m) for (m, _), _ in new], [0.0 if ch else 1.0 for (_, ch), _ in new], thr)
    return [(new[i][0][0], new[i][1], new[i][0][1]) for i in keep]  # (mask, iou, changed)


class DiscPrompter:
    """A synthetic prompter: for point (x, y), K = 3 nested discs around it as logits (radius - distance,
    plus a fixed texture), with a predicted IoU that varies with the point."""

    family = "sam"

    def __init__(self, radii=(4.0, 9.0, 16.0), texture: float = 0.8):
        self.radii, self.texture = radii, texture  # texture > 1: holes and specks near the rims
        self.embedded = 0

    def embed(self, image):
        self.embedded += 1
        return image.shape[:2]

    def predict(self, state, points, *, multimask):
        h, w = state
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
        texture = torch.sin(xs * 0.7) * torch.cos(ys * 0.5) * self.texture
        radii = self.radii if multimask else self.radii[1:2]
        out, ious = [], []
        for x, y in points.tolist():
            d = ((xs - x) ** 2 + (ys - y) ** 2).sqrt()
            out.append(torch.stack([r - d + texture for r in radii]))
            ious.append([(math.sin(x * 12.9898 + y * 78.233 + r) * 43758.5453) % 1 for r in radii])
        return torch.stack(out).float(), torch.tensor(ious, dtype=torch.float)


def test_point_grid_and_crop_boxes():
    for n in (1, 4, 7):
        assert torch.allclose(build_point_grid(n), torch.tensor(ref_grid(n), dtype=torch.float64), atol=1e-12)
    boxes, layers = crop_boxes((50, 90), 2, 512 / 1500)
    assert boxes[0] == [0, 0, 90, 50] and layers == [0] + [1] * 4 + [2] * 16
    for box in boxes:  # every crop lies in the image and has an area
        assert 0 <= box[0] < box[2] <= 90 and 0 <= box[1] < box[3] <= 50


def test_stability_boxes_and_nms_match_plain_loops():
    torch.manual_seed(0)
    logits = torch.randn(12, 9, 11) * 2
    ref = torch.tensor([ref_stability(lg, 0.0, 1.0) for lg in logits])
    assert torch.allclose(stability_score(logits, 0.0, 1.0).double(), ref.double(), atol=1e-6)  # float division
    masks = logits > 1.5
    masks[3] = False  # an empty mask gives [0, 0, 0, 0]
    assert masks_to_boxes(masks).tolist() == [ref_box(m) for m in masks]
    boxes = torch.randint(0, 40, (30, 2))
    boxes = torch.cat([boxes, boxes + torch.randint(1, 25, (30, 2))], dim=1)
    scores = torch.rand(30)
    for thr in (0.0, 0.3, 0.7):
        assert box_nms(boxes, scores, thr).tolist() == ref_nms(boxes.tolist(), scores.tolist(), thr)
    import torchvision  # the function the official code calls

    assert box_nms(boxes, scores, 0.5).tolist() == torchvision.ops.nms(boxes.float(), scores, 0.5).tolist()
    crop, W, H = [10, 0, 60, 40], 100, 40
    assert near_crop_edge(boxes, crop, [0, 0, W, H]).tolist() == [ref_near_edge(b, crop, W, H) for b in boxes.tolist()]


@pytest.mark.parametrize("cfg", [
    AMGConfig(points_per_side=5, stability_score_thresh=0.6, pred_iou_thresh=0.3),
    AMGConfig(points_per_side=4, stability_score_thresh=0.5, pred_iou_thresh=0.2, crop_n_layers=1, box_nms_thresh=0.5),
    AMGConfig(points_per_side=6, stability_score_thresh=0.0, pred_iou_thresh=0.0, multimask_output=False),
])
def test_generator_matches_plain_pipeline_on_synthetic_prompter(cfg):
    rng = np.random.default_rng(0)
    image = (rng.random((40, 64, 3)) * 255).astype(np.uint8)
    got = generate_masks(DiscPrompter(), image, cfg)
    ref = ref_generate(DiscPrompter(), image, cfg, cfg.pred_iou_thresh)
    assert len(ref) > 1 and len(got) == len(ref)  # something to keep, and the same choices
    for i, (m, iou, _, _) in enumerate(ref):
        assert torch.equal(got.masks[i], m)
        assert abs(float(got.scores[i]) - iou) < 1e-6  # float32 scores


@pytest.mark.parametrize("area,nms,drops", [(3, 0.5, False), (6, 0.7, True), (25, 0.7, True)])
def test_small_region_removal_matches_plain_loops_on_synthetic_prompter(area, nms, drops):
    rng = np.random.default_rng(3)
    image = (rng.random((40, 64, 3)) * 255).astype(np.uint8)
    cfg = AMGConfig(points_per_side=5, stability_score_thresh=0.0, pred_iou_thresh=0.0, box_nms_thresh=nms,
                    min_mask_region_area=area)
    got = generate_masks(DiscPrompter(texture=3.0), image, cfg)  # discs with holes and specks
    before = ref_generate(DiscPrompter(texture=3.0), image, cfg, 0.0)
    ref = ref_postprocess(before, area, nms)
    assert len(got) == len(ref) > 0
    for i, (m, iou, _) in enumerate(ref):
        assert torch.equal(got.masks[i], m)
        assert abs(float(got.scores[i]) - iou) < 1e-6
    assert any(changed for _, _, changed in ref)  # the post-processing did something
    assert (len(ref) < len(before)) == drops  # and its NMS dropped new duplicates where the case says so


@needs_hf
@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_generator_on_tiny_sam_models(family):
    from mask_models import tiny_sam, tiny_sam2

    prompter = SamPrompter(tiny_sam() if family == "sam" else tiny_sam2(), name="tiny", source=None)
    rng = np.random.default_rng(1)
    image = (rng.random((40, 72, 3)) * 255).astype(np.uint8)
    cfg = AMGConfig(points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    got = generate_masks(prompter, image, cfg)
    ref = ref_generate(prompter, image, cfg, 0.0)
    assert len(got) == len(ref) > 0 and got.masks.shape[1:] == (40, 72)
    for i, (m, iou, _, _) in enumerate(ref):
        # one prompt at a time vs batches of 9: the decoder's float32 sums may differ in the last bits,
        # which can flip a pixel whose logit is within 1e-5 of the threshold; none does on these inputs
        assert torch.equal(got.masks[i], m)
        assert abs(float(got.scores[i]) - iou) < 1e-5


@needs_hf
def test_prompter_frames_follow_the_official_transforms():
    """SAM: points scaled to the long-side-resized frame and masks cropped from the padded square; SAM 2:
    points as fractions of the image times the square size, masks resized straight to the image."""
    from mask_models import SIZE, tiny_sam, tiny_sam2

    image = (np.random.default_rng(2).random((30, 60, 3)) * 255).astype(np.uint8)
    pts = torch.tensor([[12.0, 7.0]], dtype=torch.float64)
    for model in (tiny_sam(), tiny_sam2()):
        p = SamPrompter(model, name="tiny", source=None)
        state = p.embed(image)
        logits, iou = p.predict(state, pts, multimask=True)
        if p.family == "sam":
            assert state["resized"] == (32, 64)  # 30 x 60 -> long side 64: int(30 * 64 / 60 + 0.5) = 32
            scaled = pts * torch.tensor([64 / 60, 32 / 30], dtype=torch.float64)
        else:
            scaled = pts / torch.tensor([60, 30], dtype=torch.float64) * SIZE
        out = model(image_embeddings=state["embeddings"], input_points=scaled.float()[None, :, None],
                    input_labels=torch.ones(1, 1, 1, dtype=torch.int), multimask_output=True)
        low = out.pred_masks[0]
        if p.family == "sam":
            up = torch.nn.functional.interpolate(low, size=(SIZE, SIZE), mode="bilinear")[..., :32, :64]
        else:
            up = low
        up = torch.nn.functional.interpolate(up, size=(30, 60), mode="bilinear")
        assert torch.allclose(logits, up, atol=1e-6) and torch.allclose(iou, out.iou_scores[0], atol=1e-6)


def test_label_map_paints_larger_masks_last():
    masks = torch.zeros(3, 6, 6, dtype=torch.bool)
    masks[0, :4, :4] = True  # area 16
    masks[1, 1:3, 1:3] = True  # area 4, inside mask 0
    masks[2, 4:, 4:] = True  # area 4
    labels = MaskSet(masks, torch.ones(3)).label_map()
    ref = torch.zeros(6, 6, dtype=torch.long)
    for i, idx in enumerate(sorted(range(3), key=lambda j: int(masks[j].sum())), start=1):  # CorrCLIP's loop
        ref[masks[idx]] = i
    assert torch.equal(labels, ref) and labels[1, 1] == 3  # the big mask covers the small one inside it
    back = MaskSet.from_label_map(labels)
    assert len(back) == 2 and torch.equal(back.label_map(), labels)


def test_file_masks_read_corrclip_npz_and_report_bad_files(tmp_path):
    labels = np.zeros((5, 7), dtype=np.int32)
    labels[1:3, 2:5] = 4
    labels[4, :] = 9
    np.savez(tmp_path / "img1.npz", instance_mask=labels)
    src = FileMasks(tmp_path)
    got = src(np.zeros((5, 7, 3), np.uint8), path="/data/JPEGImages/img1.jpg")
    assert len(got) == 2 and torch.equal(got.label_map(), torch.from_numpy(labels).long())
    with pytest.raises(ValueError, match=r"img2\.jpg: no mask file img2\.npz"):
        src(np.zeros((5, 7, 3), np.uint8), path="img2.jpg")
    with pytest.raises(ValueError, match=r"img1\.jpg: its mask file is 5x7 but the image is 6x7"):
        src(np.zeros((6, 7, 3), np.uint8), path="img1.jpg")
    np.savez(tmp_path / "empty.npz", instance_mask=np.zeros((5, 7), np.int32))
    with pytest.raises(ValueError, match="empty.jpg: its mask file holds no masks"):
        src(None, path="empty.jpg")
    with pytest.raises(ValueError, match="does not exist"):
        FileMasks(tmp_path / "nowhere")
    assert isinstance(create_mask_source(str(tmp_path)), FileMasks)  # a folder without config.json


class CountingPrompter(DiscPrompter):
    name, source = "disc", None


def test_cache_generates_each_image_once(tmp_path):
    prompter = CountingPrompter()
    cfg = AMGConfig(points_per_side=4, stability_score_thresh=0.5, pred_iou_thresh=0.0)
    images = [(np.random.default_rng(s).random((32, 40, 3)) * 255).astype(np.uint8) for s in range(2)]
    first = [CachedMasks(MaskGenerator(prompter, cfg), tmp_path)(im) for im in images]
    assert prompter.embedded == 2
    again = CachedMasks(MaskGenerator(prompter, cfg), tmp_path)  # a second run (a new process would see the same)
    second = [again(im) for im in images]
    assert prompter.embedded == 2  # nothing generated twice
    for a, b in zip(first, second):
        assert torch.equal(a.masks, b.masks) and torch.equal(a.scores, b.scores)
    other = CachedMasks(MaskGenerator(prompter, AMGConfig(points_per_side=5, pred_iou_thresh=0.0,
                                                     stability_score_thresh=0.5)), tmp_path)
    other(images[0])
    assert prompter.embedded == 3  # other settings: other masks


def test_generator_that_finds_nothing_names_the_image():
    gen = MaskGenerator(CountingPrompter(), AMGConfig(points_per_side=2, pred_iou_thresh=1.0))
    with pytest.raises(ValueError, match="photo.jpg: the mask generator found no masks"):
        gen(np.zeros((20, 20, 3), np.uint8), path="photo.jpg")


def test_bad_settings_and_images_are_refused():
    with pytest.raises(ValueError, match="points_per_side"):
        AMGConfig(points_per_side=0)
    with pytest.raises(ValueError, match="box_nms_thresh"):
        AMGConfig(box_nms_thresh=1.5)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="min_mask_region_area"):
            AMGConfig(min_mask_region_area=bad)
    with pytest.raises(ValueError, match="RGB uint8"):
        generate_masks(DiscPrompter(), np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="masks must be"):
        MaskSet(torch.zeros(3, 3, dtype=torch.bool), torch.ones(1))


@needs_hf
def test_load_by_folder_and_offline_missing_weights(tmp_path):
    from gemseg import WeightsUnavailableError
    from mask_models import tiny_sam2

    tiny_sam2().save_pretrained(tmp_path / "sam2")
    source = create_mask_source(str(tmp_path / "sam2"), settings=AMGConfig(points_per_side=2, pred_iou_thresh=0.0,
                                                                           stability_score_thresh=0.0))
    assert isinstance(source, MaskGenerator) and source.prompter.family == "sam2"
    assert source.describe()["model"] == str(tmp_path / "sam2")
    with pytest.raises(WeightsUnavailableError) as e:
        create_mask_source("sam-vit-b")  # not in this machine's hub cache; tests run with HF_HUB_OFFLINE=1
    assert "\n" not in str(e.value) and "facebook/sam-vit-base" in str(e.value)


def test_label_maps_of_a_batch_are_made_once_per_image_and_resized(tmp_path):
    from PIL import Image

    from gemseg.masks import label_maps

    prompter = CountingPrompter()
    gen = MaskGenerator(prompter, AMGConfig(points_per_side=4, stability_score_thresh=0.5, pred_iou_thresh=0.0))
    images = [Image.fromarray((np.random.default_rng(s).random((30, 40, 3)) * 255).astype(np.uint8)) for s in range(2)]
    maps = label_maps(gen, images, size=(15, 20))
    assert maps.shape == (2, 15, 20) and maps.dtype == torch.long and prompter.embedded == 2
    full = gen(np.asarray(images[0])).label_map()
    assert torch.equal(maps[0], torch.nn.functional.interpolate(full[None, None].float(), size=(15, 20),
                                                                mode="nearest")[0, 0].long())
