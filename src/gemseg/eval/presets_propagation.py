"""The presets of CASS and LPOSS / LPOSS+ (issue 19), one :class:`~gemseg.eval.preset.Preset` block per paper,
every value cited at the newest commit of the official repository (read 2026-12-04). CASS's repository
carries no licence (only its vendored dino/LICENSE); LPOSS's is MIT. Only facts are taken from them.

CASS's per-dataset *method* settings (its object-presence prior and singular-value scaling) are not
protocol fields: :data:`CASS_SETTINGS` holds them, cited, and the reproduce commands pass them with
``--proxy-settings`` (an alias of ``--method-setting``). :data:`PROXY_SETTINGS` holds Trident's too
(presets_masks.py); ``gemseg eval`` and ``gemseg ablate`` apply a preset's when they run the preset's method,
the given ``--method-setting`` items winning.
"""
from __future__ import annotations

from .preset import OUR_CHOICE, OV_STITCHER_TABLE1, Preset, cite, published_numbers
from .presets_masks import trident_proxy_settings

CASS = "MICV-yonsei/CASS@228ecdd8273e"
LPOSS = "vladan-stojnic/LPOSS@e489a7445528"
EIGHT = ("voc21", "context60", "coco_object", "voc20", "cityscapes", "context59", "ade20k", "coco_stuff")
_CV2 = "(mmseg's Resize: cv2 bilinear, not antialiased)"


def _resize(repo: str, where: str, short: int) -> dict:
    line = f"{repo}:{where} Resize(scale=(2048, {short}), keep_ratio=True)"
    return {"resize": cite("short_side", line), "size": cite(short, line), "max_long_side": cite(2048, line),
            "interpolation": cite("bilinear-cv2", f"{line} {_CV2}")}


CASS_PRESET = Preset(
    name="cass", paper="CASS, Kim et al., CVPR 2025 (arXiv 2411.17150)", method="cass", datasets=EIGHT,
    proxy=cite("dino-b8", f"{CASS}:configs/base_config.py:5 dino_type='dino_vitb8'"),
    settings={
        **_resize(CASS, "configs/cfg_voc21.py:21 (every cfg_*.py but Cityscapes)", 336),
        "mode": cite("slide", f"{CASS}:cass_segmentor.py:265 slide_crop > 0"),
        "crop": cite(224, f"{CASS}:cass_segmentor.py:33 slide_crop=224"),
        "stride": cite(112, f"{CASS}:cass_segmentor.py:33 slide_stride=112"),
        "templates": cite("imagenet80", f"{CASS}:cass_segmentor.py:90 openai_imagenet_template (80 templates)"),
        "vocabulary": cite("synonyms", f"{CASS}:cass_segmentor.py:327-338 get_cls_idx: configs/cls_*.txt split on "
                                       "', ' (the files equal SCLIP's, compared line by line)"),
        "background_query": cite(True, f"{CASS}:configs/cls_voc21.txt:1 (the background class is a query)"),
        "logit_scale": cite(40.0, f"{CASS}:cass_segmentor.py:33 logit_scale=40"),
        "prob_threshold": cite(None, f"{CASS}:cass_segmentor.py:33 prob_thd=0.0"),
        "area_threshold": cite(None, f"{CASS}:cass_segmentor.py:284-309 postprocess_result has no area rule"),
        "pamr_steps": cite(0, f"{CASS}:eval_all.sh:7 --pamr off -> eval.py:46-47 pamr_steps=0"),
        "pos_embed": cite("bicubic-scale", f"{CASS}:clip/model.py:161-178 interpolate_pos_encoding (w0 + 0.1, "
                                           "scale_factor, bicubic)"),
    },
    per_dataset={
        "voc21": {"mode": cite("whole", f"{CASS}:configs/cfg_voc21.py:7 slide_crop=0"),
                  "prob_threshold": cite(0.1, f"{CASS}:configs/cfg_voc21.py:6 prob_thd=0.1")},
        "context60": {"prob_threshold": cite(0.1, f"{CASS}:configs/cfg_context60.py:6 prob_thd=0.1")},
        "coco_object": {"prob_threshold": cite(0.1, f"{CASS}:configs/cfg_coco_object.py:6 prob_thd=0.1")},
        "cityscapes": {"size": cite(560, f"{CASS}:configs/cfg_city_scapes.py:21 Resize(scale=(2048, 560))")},
    },
    published=published_numbers(OV_STITCHER_TABLE1, {"voc21": 65.8, "context60": 36.7, "coco_object": 37.8,
                                                     "voc20": 87.8, "cityscapes": 39.4, "context59": 40.2,
                                                     "ade20k": 20.4, "coco_stuff": 26.7}, second_hand=True,
                                note="CASS's ViT-B/16 row as OV-Stitcher tabulates it (CASS's own Table 1 was not "
                                     "readable here; its README shows it only as an external image); the eight "
                                     "average to 44.4, as printed"),
    not_reproduced=(
        f"the object-presence prior of a sliding-window crop uses the whole image's class token "
        f"({CASS}:cass_segmentor.py:193-200, except Cityscapes); gemseg's method sees only its crop",
        f"fp16 DINO keys ({CASS}:clip/model.py:112) and the randomized torch.svd_lowrank (:211); gemseg: fp32/"
        "float64 and an exact eigendecomposition",
        f"DINO's input via inv_normalize with ImageNet statistics on a CLIP-normalized image and a uint8 cast "
        f"({CASS}:cass_segmentor.py:78-81, 180-181); gemseg un-normalizes with CLIP's statistics",
    ),
)

# --proxy-settings of each dataset (CASSConfig fields): configs/cfg_*.py:8-12 and clip/model.py:467-468
CASS_SETTINGS = {
    "voc21": {"global_semantics_weight": cite(0.1, f"{CASS}:configs/cfg_voc21.py:10"),
              "mean_vector_weight": cite(0.03, f"{CASS}:configs/cfg_voc21.py:11"),
              "h_threshold": cite(0.10, f"{CASS}:configs/cfg_voc21.py:12")},
    "context60": {"global_semantics_weight": cite(0.25, f"{CASS}:configs/cfg_context60.py:9"),
                  "mean_vector_weight": cite(0.04, f"{CASS}:configs/cfg_context60.py:10"),
                  "h_threshold": cite(0.09, f"{CASS}:configs/cfg_context60.py:11")},
    "coco_object": {"global_semantics_weight": cite(0.25, f"{CASS}:configs/cfg_coco_object.py:9"),
                    "mean_vector_weight": cite(0.01, f"{CASS}:configs/cfg_coco_object.py:10"),
                    "h_threshold": cite(0.10, f"{CASS}:configs/cfg_coco_object.py:11")},
    "voc20": {"global_semantics_weight": cite(0.4, f"{CASS}:configs/cfg_voc20.py:8"),
              "mean_vector_weight": cite(0.02, f"{CASS}:configs/cfg_voc20.py:9"),
              "h_threshold": cite(0.10, f"{CASS}:configs/cfg_voc20.py:10"),
              "scale_singular_values": cite(False, f"{CASS}:clip/model.py:467 dataset in ['voc20', 'city_scapes']")},
    "cityscapes": {"global_semantics_weight": cite(0.1, f"{CASS}:configs/cfg_city_scapes.py:8"),
                   "mean_vector_weight": cite(0.03, f"{CASS}:configs/cfg_city_scapes.py:9"),
                   "h_threshold": cite(0.14, f"{CASS}:configs/cfg_city_scapes.py:10"),
                   "scale_singular_values": cite(False, f"{CASS}:clip/model.py:467")},
    "context59": {"global_semantics_weight": cite(0.25, f"{CASS}:configs/cfg_context59.py:8"),
                  "mean_vector_weight": cite(0.04, f"{CASS}:configs/cfg_context59.py:9"),
                  "h_threshold": cite(0.09, f"{CASS}:configs/cfg_context59.py:10")},
    "ade20k": {"global_semantics_weight": cite(0.3, f"{CASS}:configs/cfg_ade20k.py:8"),
               "mean_vector_weight": cite(0.05, f"{CASS}:configs/cfg_ade20k.py:9"),
               "h_threshold": cite(0.06, f"{CASS}:configs/cfg_ade20k.py:10")},
    "coco_stuff": {"global_semantics_weight": cite(0.2, f"{CASS}:configs/cfg_coco_stuff164k.py:8"),
                   "mean_vector_weight": cite(0.02, f"{CASS}:configs/cfg_coco_stuff164k.py:9"),
                   "h_threshold": cite(0.02, f"{CASS}:configs/cfg_coco_stuff164k.py:10")},
}


# preset -> dataset -> the method's cited settings (Trident's: TridentConfig fields, presets_masks.py)
PROXY_SETTINGS = {"cass": CASS_SETTINGS, "trident": trident_proxy_settings()}


def proxy_settings_text(preset: str, dataset: str) -> str:
    """The ``--proxy-settings`` text of ``preset`` on ``dataset`` (empty if it has none)."""
    values = PROXY_SETTINGS.get(preset, {}).get(dataset, {})
    return ",".join(f"{k}={str(c.value).lower() if isinstance(c.value, bool) else c.value}" for k, c in values.items())


_LPOSS_DATA = "segmentation/configs/_base_/datasets/pascal_voc12.py"


def _lposs(name: str, refine: str, config: str) -> Preset:
    return Preset(
        name=name, paper="LPOSS, Stojnić et al., CVPR 2025 (arXiv 2503.19777)", method="maskclip", datasets=EIGHT,
        pretrained="laion2b_s34b_b88k",
        settings={
            **_resize(LPOSS, f"{_LPOSS_DATA}:35 img_scale=(2048, 448) (every dataset config)", 448),
            "mode": cite("slide", f"{LPOSS}:{_LPOSS_DATA}:64 test_cfg mode='slide'"),
            "crop": cite(224, f"{LPOSS}:{_LPOSS_DATA}:64 crop_size=(224, 224)"),
            "stride": cite(112, f"{LPOSS}:{_LPOSS_DATA}:64 stride=(112, 112)"),
            "templates": cite("imagenet80", f"{LPOSS}:configs/maskclip.yaml:20 use_templates: True -> "
                                            "models/maskclip/utils/prompt_templates.py (80 templates)"),
            "vocabulary": cite("names", f"{OUR_CHOICE}: LPOSS's class lists (segmentation/datasets/*.py CLASSES, "
                                        "';'-separated synonyms) are not converted to gemseg class files"),
            "background_query": cite(True, f"{LPOSS}:segmentation/datasets/pascal_voc.py:16 the background "
                                           "class is a query (26 stuff names)"),
            "logit_scale": cite(100.0, f"{LPOSS}:models/maskclip/maskclip.py:196 softmax(output * 100); "
                                       "the labels are the argmax of the propagated scores"),
            "prob_threshold": cite(None, f"{LPOSS}:segmentation/evaluation/lposs_eval.py:352-361 no threshold"),
            "area_threshold": cite(None, "LPOSS has no area rule"),
            "pamr_steps": cite(0, "LPOSS has no PAMR"),
            "pos_embed": cite("bicubic", f"{LPOSS}:models/maskclip/maskclip.py:93-118 resize_pos_embed "
                                         "(bicubic to the size, class token kept), called at :66-67"),
            "refine": cite((refine,), f"{LPOSS}:{config} (pixel_refine), lposs_eval.py:233-363 slide_inference"),
        },
        not_reproduced=(
            f"the initial scores: MaskCLIP's patch cosines per window ({LPOSS}:segmentation/evaluation/"
            "lposs_eval.py:294-305); gemseg averages the method's window scores and pools them onto each "
            "window's patch grid",
            "LPOSS's own class lists and background names (segmentation/datasets/*.py); the preset uses the "
            "datasets' display names",
            "no published numbers were read: the paper's tables were not available here, and OV-Stitcher's "
            "Table 1 (arXiv 2604.08110), which tabulates SC-CLIP, SFP and CASS, has no LPOSS row",
        ),
    )


LPOSS_PRESET = _lposs("lposs", "lposs", "configs/lposs.yaml:18 pixel_refine: false")
LPOSS_PLUS_PRESET = _lposs("lposs+", "lposs+", "configs/lposs_plus.yaml:18 pixel_refine: true")

PRESETS = (CASS_PRESET, LPOSS_PRESET, LPOSS_PLUS_PRESET)
