"""The built-in presets, one :class:`~gemseg.eval.preset.Preset` block per paper.

Every value cites the line it was read from at the newest commit of the official repository (the
commits below; audited 2026-12-04), so the next audit is a diff. To add a preset, write one more
``Preset(...)`` block and add it to :data:`BUILTIN`. Repositories read: SCLIP (no licence file), ClearCLIP
(S-Lab License 1.0), NACLIP (LICENSE), ProxyCLIP (README names the S-Lab License 1.0; no licence file),
GEM (LICENSE), MaskCLIP (Apache-2.0, an mmsegmentation fork), Trident (Apache-2.0), CorrCLIP (no licence file for CorrCLIPv1). Only facts are taken from them (values,
class names, published numbers).
"""
from __future__ import annotations

from .preset import EIGHT, OUR_CHOICE, Preset, Published, cite, mmseg_resize, published_numbers
from .presets_masks import CORRCLIP_PRESET, TRIDENT_PRESET, TRIDENT_TABLE1  # the mask/SAM-based methods (issue 18)
from .presets_2025 import PRESETS_2025
from .presets_propagation import PRESETS as PROPAGATION_PRESETS  # cass, lposs, lposs+ (issue 19)

SCLIP = "wangf3014/SCLIP@b56bd3014b9e"
CLEARCLIP = "mc-lan/ClearCLIP@ad68a404d55d"
NACLIP = "sinahmr/NACLIP@0cac3a651f75"
PROXYCLIP = "mc-lan/ProxyCLIP@e7b767fbc58e"
GEM = "WalBouss/GEM@5fa677ca1dcf"
MASKCLIP = "chongzhou96/MaskCLIP@245d31f809be"
# second-hand tables (images in the READMEs of later papers)
CLEARCLIP_TABLE2 = f"{CLEARCLIP}:assets/results.png (README.md:93; ClearCLIP appendix Table 2, ViT-Base)"
RESCLIP_TABLE = "yvhangyang/ResCLIP@0e085f7f52f0:figs/main_results_w.png (README.md:34; ResCLIP, arXiv 2411.15851)"

_BG_LINE = "configs/cls_voc21.txt:1 (the background class is a query)"



GEM_PRESET = Preset(
    name="gem", paper="GEM, Bousselham et al., CVPR 2024 (arXiv 2312.00878)", method="gem",
    datasets=(*EIGHT, "openimages_v7"),
    settings={
        "resize": cite("fixed", f"{GEM}:gem/gem.py:77 img_size=(448, 448), :84 transforms.Resize(size=img_size)"),
        "size": cite(448, f"{GEM}:gem/gem.py:77"),
        "interpolation": cite("bicubic", f"{GEM}:gem/gem.py:84 InterpolationMode.BICUBIC (PIL, antialiased)"),
        "mode": cite("whole", f"{GEM}:gem/gem_wrapper.py:58-85 forward: one pass over the whole image"),
        "templates": cite("single", f"{GEM}:gem/gem_wrapper.py:45 'a photo of a {{cls}}.'"),
        "vocabulary": cite("names", f"{GEM}:README.md:142 foreground class names"),
        "background_query": cite(False, f"{GEM}:README.md:119 no background prompt; :148-152 background where "
                                        "the top probability is below a threshold"),
        "logit_scale": cite(100.0, f"{OUR_CHOICE}: CLIP's learned scale (GEM's README.md:150 softmaxes min-max maps)"),
        "prob_threshold": cite(None, f"{OUR_CHOICE}, per dataset (README.md:138 0.85 'depends on the number of "
                                     "classes', :154 'determined via a hyperparameter sweep'; for min-max maps)"),
        "area_threshold": cite(None, "GEM has no area rule"),
        "pamr_steps": cite(0, "GEM has no PAMR"),
        "point_threshold": cite(0.5, OUR_CHOICE),
        "point_normalize": cite("minmax", f"{GEM}:gem/gem_wrapper.py:51-56, :83-84 min-max per map"),
        "pos_embed": cite("bicubic-aa", f"{GEM}:gem/gem_utils.py:36 F.interpolate(size=new_size, mode='bicubic', "
                                        "antialias=True), called at :166-171"),
        "point_classes": cite("present", f"{OUR_CHOICE} (docs/evaluation.md)"),
    },
    per_dataset={d: {"prob_threshold": cite(0.5, f"{OUR_CHOICE}, untuned: run `gemseg eval --sweep "
                                                 "prob_threshold=...` where you have the data")}
                 for d in ("voc21", "context60", "coco_object")},
    published=(
        *published_numbers(RESCLIP_TABLE, {"voc21": 46.2, "context60": 32.6}, second_hand=True),
        *published_numbers(CLEARCLIP_TABLE2, {"voc20": 79.9, "context59": 35.9, "coco_stuff": 23.7, "cityscapes": 30.8,
                                     "ade20k": 15.7}, second_hand=True,
                  note="GEM run by ClearCLIP under ClearCLIP's protocol (short side 448, 448/224 windows)"),
    ),
    not_reproduced=("GEM's own paper tables and its OpenImagesV7 p-mIoU could not be read in any stored "
                    "source; every number here is second-hand",),
)

SCLIP_PRESET = Preset(
    name="sclip", paper="SCLIP, Wang et al., ECCV 2024 (arXiv 2312.01597)", method="sclip", datasets=EIGHT,
    settings={
        **mmseg_resize(SCLIP, "configs/cfg_voc21.py:17 (every cfg_*.py)", 336),
        "mode": cite("slide", f"{SCLIP}:clip_segmentor.py:141 slide_crop > 0"),
        "crop": cite(224, f"{SCLIP}:clip_segmentor.py:21 slide_crop=224"),
        "stride": cite(112, f"{SCLIP}:clip_segmentor.py:21 slide_stride=112"),
        "templates": cite("imagenet80", f"{SCLIP}:clip_segmentor.py:38 openai_imagenet_template "
                                        "(prompts/imagenet_template.py:169, 80 templates)"),
        "vocabulary": cite("synonyms", f"{SCLIP}:clip_segmentor.py:208 configs/cls_*.txt split on ', ': "
                                       "the *_sclip.txt files"),
        "background_query": cite(True, f"{SCLIP}:{_BG_LINE}"),
        "logit_scale": cite(40.0, f"{SCLIP}:clip_segmentor.py:20 logit_scale=40"),
        "prob_threshold": cite(None, f"{SCLIP}:clip_segmentor.py:20 prob_thd=0.0"),
        "area_threshold": cite(None, f"{SCLIP}:clip_segmentor.py:21 area_thd=None"),
        "pamr_steps": cite(0, f"{SCLIP}:clip_segmentor.py:20 pamr_steps=0"),
        "pos_embed": cite("bicubic-scale", f"{SCLIP}:clip/model.py:263-279 interpolate_pos_encoding "
                                           "(w0 + 0.1, scale_factor, bicubic)"),
    },
    per_dataset={
        "voc21": {"logit_scale": cite(65.0, f"{SCLIP}:configs/cfg_voc21.py:6"),
                  "prob_threshold": cite(0.1, f"{SCLIP}:configs/cfg_voc21.py:7"),
                  "area_threshold": cite(0.1, f"{SCLIP}:configs/cfg_voc21.py:8")},
        "context60": {"logit_scale": cite(50.0, f"{SCLIP}:configs/cfg_context60.py:6"),
                      "prob_threshold": cite(0.1, f"{SCLIP}:configs/cfg_context60.py:7")},
        "coco_object": {"logit_scale": cite(50.0, f"{SCLIP}:configs/cfg_coco_object.py:6"),
                        "prob_threshold": cite(0.1, f"{SCLIP}:configs/cfg_coco_object.py:7")},
        "cityscapes": {"size": cite(560, f"{SCLIP}:configs/cfg_city_scapes.py:14 Resize(scale=(2048, 560))")},
        "coco_stuff": {"size": cite(448, f"{SCLIP}:configs/cfg_coco_stuff164k.py:14 Resize(scale=(2048, 448))")},
    },
    published=tuple(Published(d, v, f"{SCLIP}:README.md:{line} ('Results', the repository's default setup)")
                    for d, v, line in (("voc21", 59.63, 78), ("context60", 31.74, 76), ("coco_object", 33.52, 72),
                                       ("voc20", 81.54, 77), ("cityscapes", 32.34, 71), ("context59", 34.46, 75),
                                       ("ade20k", 16.45, 70), ("coco_stuff", 22.77, 74))),
)

CLEARCLIP_PRESET = Preset(
    name="clearclip", paper="ClearCLIP, Lan et al., ECCV 2024 (arXiv 2407.12442)", method="clearclip",
    datasets=EIGHT,
    settings={
        **mmseg_resize(CLEARCLIP, "configs/cfg_voc21.py:15 (every cfg_*.py)", 448),
        "mode": cite("slide", f"{CLEARCLIP}:clearclip_segmentor.py:209 slide_crop > 0"),
        "crop": cite(448, f"{CLEARCLIP}:clearclip_segmentor.py:23 slide_crop=448"),
        "stride": cite(224, f"{CLEARCLIP}:clearclip_segmentor.py:23 slide_stride=224"),
        "templates": cite("imagenet80", f"{CLEARCLIP}:clearclip_segmentor.py:98 openai_imagenet_template "
                                        "(prompts/imagenet_template.py:169, 80 templates)"),
        "vocabulary": cite("synonyms", f"{CLEARCLIP}:clearclip_segmentor.py:288 configs/cls_*.txt split on ','; "
                                       "ADE20K, Cityscapes, COCO-Stuff, Context59/60 equal SCLIP's files (compared)"),
        "background_query": cite(True, f"{CLEARCLIP}:{_BG_LINE}"),
        "logit_scale": cite(50.0, f"{CLEARCLIP}:clearclip_segmentor.py:23 logit_scale=50"),
        "prob_threshold": cite(None, f"{CLEARCLIP}:clearclip_segmentor.py:23 prob_thd=0.0"),
        "area_threshold": cite(None, f"{CLEARCLIP}:clearclip_segmentor.py:216-242 postprocess_result has no area rule"),
        "pamr_steps": cite(0, f"{CLEARCLIP}:clearclip_segmentor.py has no PAMR"),
        "pos_embed": cite("bicubic-scale", f"{CLEARCLIP}:open_clip/transformer.py:569-585 interpolate_pos_encoding "
                                           "(w0 + 0.1, scale_factor, bicubic)"),
    },
    per_dataset={
        "voc21": {"vocabulary": cite("voc21_clearclip.txt", f"{CLEARCLIP}:configs/cfg_voc21.py:5 cls_voc21.txt"),
                  "prob_threshold": cite(0.5, f"{CLEARCLIP}:configs/cfg_voc21.py:6")},
        "voc20": {"vocabulary": cite("voc20_clearclip.txt", f"{CLEARCLIP}:configs/cfg_voc20.py:5 cls_voc20.txt")},
        "context60": {"prob_threshold": cite(0.15, f"{CLEARCLIP}:configs/cfg_context60.py:6")},
        "coco_object": {"vocabulary": cite("names", f"{CLEARCLIP}:configs/cfg_coco_object.py:5 cls_coco_object.txt: "
                                                    "plain names, those of coco_object.txt (compared)"),
                        "prob_threshold": cite(0.4, f"{CLEARCLIP}:configs/cfg_coco_object.py:6")},
        "cityscapes": {"crop": cite(224, f"{CLEARCLIP}:configs/cfg_city_scapes.py:6 slide_crop=224 (stride: the "
                                         "segmentor's 224)")},
    },
    published=(
        *published_numbers(CLEARCLIP_TABLE2, {"voc20": 80.9, "context59": 35.9, "coco_stuff": 23.9, "cityscapes": 30.0,
                                     "ade20k": 16.7}),
        *published_numbers(RESCLIP_TABLE, {"voc21": 51.8, "context60": 32.6, "coco_object": 33.0}, second_hand=True),
    ),
    not_reproduced=(
        f"fp16 inference ({CLEARCLIP}:clearclip_segmentor.py:31 precision='fp16', :208 inputs.half())",
        "crops padded symmetrically to the patch size (clearclip_segmentor.py:170, :246); gemseg pads right/bottom",
        "the released configs/base_config.py:6 sets model_type='vanilla'; the published numbers are ClearCLIP's "
        "own attention (model_type='ClearCLIP', open_clip/transformer.py:614): --method clearclip",
    ),
)

NACLIP_PRESET = Preset(
    name="naclip", paper="NACLIP, Hajimiri et al., WACV 2025 (arXiv 2404.08181)", method="naclip",
    datasets=EIGHT,
    settings={
        **mmseg_resize(NACLIP, "configs/cfg_ade20k.py:14 (every cfg_*.py but Cityscapes)", 336),
        "mode": cite("slide", f"{NACLIP}:naclip.py:121 slide_crop > 0"),
        "crop": cite(224, f"{NACLIP}:naclip.py:22 slide_crop=224"),
        "stride": cite(112, f"{NACLIP}:naclip.py:22 slide_stride=112"),
        "templates": cite("imagenet80", f"{NACLIP}:naclip.py:35 openai_imagenet_template "
                                        "(prompts/imagenet_template.py:1, 80 templates)"),
        "vocabulary": cite("synonyms", f"{NACLIP}:naclip.py:185 configs/cls_*.txt split on ', '; equal to "
                                       "SCLIP's files (compared)"),
        "background_query": cite(True, f"{NACLIP}:{_BG_LINE}"),
        "logit_scale": cite(40.0, f"{NACLIP}:naclip.py:22 logit_scale=40"),
        "prob_threshold": cite(None, f"{NACLIP}:naclip.py:22 prob_thd=0.0"),
        "area_threshold": cite(None, f"{NACLIP}:naclip.py:139-160 postprocess_result has no area rule"),
        "pamr_steps": cite(10, f"{NACLIP}:naclip.py:21 pamr_steps=10; README.md:54 main results with PAMR on "
                               "(eval.py:56-57)"),
        "pamr_dilations": cite((8, 16), f"{NACLIP}:naclip.py:21 pamr_stride=(8, 16)"),
        "pos_embed": cite("bicubic-scale", f"{NACLIP}:clip/model.py:134-151 interpolate_pos_encoding "
                                           "(w0 + 0.1, scale_factor, bicubic)"),
    },
    per_dataset={
        "voc21": {"mode": cite("whole", f"{NACLIP}:configs/cfg_voc21.py:7 slide_crop=0 (one pass, naclip.py:124)"),
                  "prob_threshold": cite(0.1, f"{NACLIP}:configs/cfg_voc21.py:6")},
        "voc20": {"mode": cite("whole", f"{NACLIP}:configs/cfg_voc20.py:6 slide_crop=0 (one pass, naclip.py:124)")},
        "context60": {"prob_threshold": cite(0.1, f"{NACLIP}:configs/cfg_context60.py:6")},
        "coco_object": {"prob_threshold": cite(0.1, f"{NACLIP}:configs/cfg_coco_object.py:6")},
        "cityscapes": {"size": cite(560, f"{NACLIP}:configs/cfg_city_scapes.py:14 Resize(scale=(2048, 560))")},
    },
    published=tuple(Published(d, v, f"{NACLIP}:README.md:{line} ('Results', v2 configs, PAMR on)")
                    for d, v, line in (("voc21", 64.07, 78), ("context60", 34.99, 79), ("coco_object", 36.19, 80),
                                       ("voc20", 83.03, 81), ("cityscapes", 38.27, 82), ("context59", 38.35, 83),
                                       ("ade20k", 19.05, 84), ("coco_stuff", 25.69, 85))),
    not_reproduced=("whole-image passes: the official code interpolates the floor(H/16) x floor(W/16) grid to the "
                    "image (naclip.py:65-68); gemseg pads to a multiple of the patch and crops back",),
)

PROXYCLIP_PRESET = Preset(
    name="proxyclip", paper="ProxyCLIP, Lan et al., ECCV 2024 (arXiv 2408.04883)", method="proxyclip",
    datasets=EIGHT,
    proxy=cite("dino-b8", f"{PROXYCLIP}:configs/base_config.py:6 vfm_model='dino' -> proxyclip_segmentor.py:53 "
                          "dino_vitb8"),
    settings={
        **mmseg_resize(PROXYCLIP, "configs/cfg_voc21.py:15 (every cfg_*.py but ADE20K, Cityscapes)", 336),
        "mode": cite("slide", f"{PROXYCLIP}:proxyclip_segmentor.py:260 slide_crop > 0"),
        "crop": cite(336, f"{PROXYCLIP}:proxyclip_segmentor.py:31 slide_crop=336"),
        "stride": cite(112, f"{PROXYCLIP}:proxyclip_segmentor.py:31 slide_stride=112"),
        "templates": cite("imagenet80", f"{PROXYCLIP}:proxyclip_segmentor.py:90 openai_imagenet_template "
                                        "(prompts/imagenet_template.py:169, 80 templates)"),
        "vocabulary": cite("synonyms", f"{PROXYCLIP}:proxyclip_segmentor.py:336 configs/cls_*.txt split on '; '; "
                                       "ADE20K, Cityscapes, COCO-Stuff, Context59/60 equal SCLIP's files (compared)"),
        "background_query": cite(True, f"{PROXYCLIP}:{_BG_LINE}"),
        "logit_scale": cite(40.0, f"{PROXYCLIP}:proxyclip_segmentor.py:31 logit_scale=40"),
        "prob_threshold": cite(None, f"{PROXYCLIP}:proxyclip_segmentor.py:31 prob_thd=0.0"),
        "area_threshold": cite(None, f"{PROXYCLIP}:proxyclip_segmentor.py:267-292 postprocess_result has no area rule"),
        "pamr_steps": cite(0, f"{PROXYCLIP}:proxyclip_segmentor.py has no PAMR"),
        "pos_embed": cite("bicubic-scale", f"{PROXYCLIP}:open_clip/transformer.py:540-555 interpolate_pos_encoding "
                                           "(w0 + 0.1, scale_factor, bicubic)"),
    },
    per_dataset={
        "voc21": {"vocabulary": cite("voc21_proxyclip.txt", f"{PROXYCLIP}:configs/cfg_voc21.py:5 cls_voc21.txt"),
                  "prob_threshold": cite(0.2, f"{PROXYCLIP}:configs/cfg_voc21.py:6")},
        "voc20": {"vocabulary": cite("voc20_clearclip.txt", f"{PROXYCLIP}:configs/cfg_voc20.py:5 cls_voc20.txt "
                                                            "(the same list as ClearCLIP's, compared)")},
        "context60": {"prob_threshold": cite(0.15, f"{PROXYCLIP}:configs/cfg_context60.py:6")},
        "coco_object": {"vocabulary": cite("coco_object_proxyclip.txt",
                                           f"{PROXYCLIP}:configs/cfg_coco_object.py:5 cls_coco_object.txt"),
                        "prob_threshold": cite(0.25, f"{PROXYCLIP}:configs/cfg_coco_object.py:6")},
        "ade20k": {"size": cite(448, f"{PROXYCLIP}:configs/cfg_ade20k.py:14 Resize(scale=(2048, 448))")},
        "cityscapes": {"size": cite(448, f"{PROXYCLIP}:configs/cfg_city_scapes.py:16 Resize(scale=(2048, 448))"),
                       "crop": cite(224, f"{PROXYCLIP}:configs/cfg_city_scapes.py:7 slide_crop=224"),
                       "stride": cite(112, f"{PROXYCLIP}:configs/cfg_city_scapes.py:6 slide_stride=112")},
    },
    published=published_numbers(TRIDENT_TABLE1, {"voc21": 61.3, "context60": 35.3, "coco_object": 37.5, "voc20": 80.3,
                                        "cityscapes": 38.1, "context59": 39.1, "ade20k": 20.2, "coco_stuff": 26.5},
                       second_hand=True, note="the row's proxy is stated neither there nor in ProxyCLIP's README; "
                                              "the repository's default is DINO ViT-B/8"),
    not_reproduced=(f"fp16 CLIP and proxy ({PROXYCLIP}:proxyclip_segmentor.py:40, :74)",
                    "crops zero-padded to a multiple of 56 (proxyclip_segmentor.py:220); gemseg pads to the patch size"),
)

_MASKCLIP_VOC = f"{MASKCLIP}:configs/_base_/datasets/pascal_voc12_aug_20.py:23 img_scale=(2048, 512), :27 Resize(keep_ratio=True)"
MASKCLIP_PRESET = Preset(
    name="maskclip", paper="MaskCLIP, Zhou et al., ECCV 2022 (arXiv 2112.01071)", method="maskclip",
    datasets=("voc20", "context59", "coco_stuff", "cityscapes"),
    settings={
        "resize": cite("short_side", _MASKCLIP_VOC), "size": cite(512, _MASKCLIP_VOC),
        "max_long_side": cite(2048, _MASKCLIP_VOC),
        "interpolation": cite("bilinear-cv2", f"{_MASKCLIP_VOC} (mmcv imresize: cv2 bilinear)"),
        "mode": cite("whole", f"{MASKCLIP}:configs/_base_/models/maskclip_vit16.py:51 test_cfg=dict(mode='whole')"),
        "templates": cite("maskclip85", f"{MASKCLIP}:tools/maskclip_utils/prompt_engineering.py:33 prompt_templates"),
        "vocabulary": cite("names", f"{MASKCLIP}:tools/maskclip_utils/prompt_engineering.py:6 cityscapes_classes, "
                                    "plain names (those of cityscapes.txt, compared)"),
        "background_query": cite(True, "no dataset of MaskCLIP's tables has a background class"),
        "logit_scale": cite(100.0, f"{MASKCLIP}:mmseg/models/decode_heads/maskclip_head.py:132 softmax(output*100)"),
        "prob_threshold": cite(None, "MaskCLIP has no threshold"),
        "area_threshold": cite(None, "MaskCLIP has no area rule"),
        "pamr_steps": cite(0, "MaskCLIP has no PAMR"),
        "pos_embed": cite("bicubic", f"{MASKCLIP}:mmseg/models/backbones/vit.py:401-409 resize_pos_embed: class "
                                     "token kept, grid resize(size, align_corners=False, mode) with "
                                     "configs/_base_/models/maskclip_vit16.py:28 interpolate_mode='bicubic'"),
    },
    per_dataset={
        "voc20": {"vocabulary": cite("voc20_maskclip.txt", f"{MASKCLIP}:tools/maskclip_utils/prompt_engineering.py:12")},
        "context59": {
            "vocabulary": cite("context59_maskclip.txt", f"{MASKCLIP}:tools/maskclip_utils/prompt_engineering.py:14"),
            "size": cite(520, f"{MASKCLIP}:configs/_base_/datasets/pascal_context_59.py:7 img_scale=(520, 520)"),
            "max_long_side": cite(520, f"{MASKCLIP}:configs/_base_/datasets/pascal_context_59.py:7 (keep_ratio: "
                                       "scale min(520 / long, 520 / short), so the long side is 520)")},
        "coco_stuff": {"vocabulary": cite("coco_stuff_maskclip.txt",
                                          f"{MASKCLIP}:tools/maskclip_utils/prompt_engineering.py:10")},
        "cityscapes": {
            "size": cite(512, f"{MASKCLIP}:configs/maskclip/maskclip_vit16_1024x512_cityscapes.py:22 img_scale=(1024, 512)"),
            "max_long_side": cite(1024, f"{MASKCLIP}:configs/maskclip/maskclip_vit16_1024x512_cityscapes.py:22")},
    },
    published=(
        *(Published(d, v, f"{MASKCLIP}:configs/maskclip/README.md:{line} (ViT-B/16)")
          for d, v, line in (("voc20", 49.5, 15), ("context59", 21.7, 24), ("coco_stuff", 12.5, 33))),
        *published_numbers(CLEARCLIP_TABLE2, {"voc20": 74.9, "context59": 26.4, "coco_stuff": 16.4, "cityscapes": 12.6},
                  second_hand=True, note="ClearCLIP's re-implementation (value path, output projection only: "
                                         "--method maskclip-vproj) under ClearCLIP's protocol"),
    ),
    not_reproduced=(
        f"ImageNet pixel statistics ({MASKCLIP}:configs/_base_/datasets/pascal_voc12_aug_20.py:4-5); gemseg "
        "normalizes with the checkpoint's CLIP statistics",
        "key smoothing and prompt denoising (maskclip_head.py:129-145) are off in the ViT-B/16 configs and not "
        "implemented",
    ),
)

# the order of `gemseg eval --list-presets` is alphabetical; this tuple is the registry's content
BUILTIN: tuple[Preset, ...] = (GEM_PRESET, SCLIP_PRESET, CLEARCLIP_PRESET, NACLIP_PRESET, PROXYCLIP_PRESET,
                               MASKCLIP_PRESET, TRIDENT_PRESET, *PRESETS_2025, CORRCLIP_PRESET,
                               *PROPAGATION_PRESETS)
