"""The presets of the SAM-based methods: Trident and CorrCLIP (issue 18), one record each.

Every value cites the line it was read from at the newest commit of the official repository (read
2026-12-04): Trident is Apache-2.0; CorrCLIPv1 carries no licence file, so only facts are taken (values,
class names, published numbers).
"""
from __future__ import annotations

from .preset import EIGHT, Cited, Preset, cite, mmseg_resize, published_numbers

TRIDENT = "YuHengsss/Trident@a93b346d1b1d"
CORRCLIP = "zdk258/CorrCLIP@103bc18213e6"
TRIDENT_TABLE1 = "YuHengsss/Trident@a93b346d1b1d:assets/data_result.png (README.md:38; Trident, arXiv 2411.09219, Table 1)"

_TRIDENT_SIZE = {"voc21": (448, 16), "context60": (576, 16), "coco_object": (448, 16), "voc20": (336, 17),
                 "cityscapes": (688, 18), "context59": (576, 15), "ade20k": (576, 16), "coco_stuff": (448, 15)}
_TRIDENT_CFG = {"voc21": "cfg_voc21", "context60": "cfg_context60", "coco_object": "cfg_coco_object",
                "voc20": "cfg_voc20", "cityscapes": "cfg_city_scapes", "context59": "cfg_context59",
                "ade20k": "cfg_ade20k", "coco_stuff": "cfg_coco_stuff164k"}

# Trident's per-dataset method settings: TridentConfig fields (handed to the model as its proxy settings,
# gemseg.eval.presets_propagation.PROXY_SETTINGS) and the "sam-prompts" refiner's coarse_thresh (the
# protocol's refine, trident_refine below)
TRIDENT_METHOD_SETTINGS = {
    "voc21": {"coarse_thresh": cite(0.2, f"{TRIDENT}:configs/cfg_voc21.py:7")},
    "context60": {"coarse_thresh": cite(0.15, f"{TRIDENT}:configs/cfg_context60.py:7")},
    "coco_object": {"coarse_thresh": cite(0.25, f"{TRIDENT}:configs/cfg_coco_object.py:6")},
    "voc20": {"coarse_thresh": cite(0.2, f"{TRIDENT}:configs/cfg_voc20.py:6"),
              "stride": cite(112, f"{TRIDENT}:configs/cfg_voc20.py:7 slide_stride=112"),
              "cos_fac": cite(0.0, f"{TRIDENT}:configs/cfg_voc20.py:8")},
    "cityscapes": {"coarse_thresh": cite(0.10, f"{TRIDENT}:configs/cfg_city_scapes.py:9"),
                   "cos_fac": cite(3.0, f"{TRIDENT}:configs/cfg_city_scapes.py:7"),
                   "refine_neg_cos": cite(False, f"{TRIDENT}:configs/cfg_city_scapes.py:8"),
                   "split_halves": cite(True, f"{TRIDENT}:configs/cfg_city_scapes.py:6 dataset_type -> trident.py:141")},
    "context59": {"coarse_thresh": cite(0.15, f"{TRIDENT}:configs/cfg_context59.py:6")},
    "ade20k": {"coarse_thresh": cite(0.05, f"{TRIDENT}:configs/cfg_ade20k.py:7"),
               "refine_neg_cos": cite(False, f"{TRIDENT}:configs/cfg_ade20k.py:6")},
    "coco_stuff": {"coarse_thresh": cite(0.05, f"{TRIDENT}:configs/cfg_coco_stuff164k.py:6")},
}

_SAM_REFINE = f"{TRIDENT}:dist_test.sh:3 --sam_refine -> seg_utils/utils.py:92 (refiner 'sam-prompts')"


def trident_refine(dataset: str | None = None) -> Cited:
    """The cited protocol ``refine`` of Trident on ``dataset`` (None: base_config.py's coarse_thresh)."""
    if dataset is None:
        return cite((("sam-prompts", {"coarse_thresh": 0.2}),), f"{_SAM_REFINE}; coarse_thresh "
                                                                f"{TRIDENT}:configs/base_config.py:18")
    thresh = TRIDENT_METHOD_SETTINGS[dataset]["coarse_thresh"]
    return cite((("sam-prompts", {"coarse_thresh": thresh.value}),), f"{_SAM_REFINE}; coarse_thresh {thresh.source}")


def trident_proxy_settings() -> dict:
    """dataset -> the TridentConfig fields of TRIDENT_METHOD_SETTINGS (all but coarse_thresh), cited."""
    return {d: {k: c for k, c in v.items() if k != "coarse_thresh"} for d, v in TRIDENT_METHOD_SETTINGS.items()
            if len(v) > 1}


def _with_refine(per_dataset: dict) -> dict:
    return {d: {**per_dataset.get(d, {}), "refine": trident_refine(d)} for d in EIGHT}


TRIDENT_PRESET = Preset(
    name="trident", paper="Trident, Shi, Dong, Xu, ICCV 2025 (arXiv 2411.09219)", method="trident",
    datasets=EIGHT,
    proxy=cite("dino-b16", f"{TRIDENT}:trident.py:48 torch.hub.load('facebookresearch/dino:main', 'dino_vitb16') "
                           "(whatever vfm_model says); SAM: configs/base_config.py:16 sam_model_type='vit_b'"),
    settings={
        **mmseg_resize(TRIDENT, "configs/cfg_voc21.py:16", 448),
        "mode": cite("whole", f"{TRIDENT}:trident.py:160 the method cuts its own windows (get_windowed_imgs): "
                              "TridentConfig crop 336 / stride 224"),
        "templates": cite("imagenet80", f"{TRIDENT}:trident.py:66 openai_imagenet_template"),
        "vocabulary": cite("synonyms", f"{TRIDENT}:trident.py:338 configs/cls_*.txt split on '; ' (every file equal "
                                       "to ProxyCLIP's, compared)"),
        "background_query": cite(True, f"{TRIDENT}:configs/cls_voc21.txt:1 (the background class is a query)"),
        "logit_scale": cite(40.0, f"{TRIDENT}:trident.py:30 logit_scale=40"),
        "prob_threshold": cite(None, f"{TRIDENT}:trident.py:30 prob_thd=0.0"),
        "area_threshold": cite(None, f"{TRIDENT}:trident.py:260-294 postprocess_result has no area rule"),
        "pamr_steps": cite(0, f"{TRIDENT}:trident.py:31 pamr_steps=0"),
        "pos_embed": cite("bicubic-scale", f"{TRIDENT}:open_clip/transformer.py:537-551 interpolate_pos_encoding "
                                           "(w0 + 0.1, scale_factor, bicubic)"),
        "refine": trident_refine(),
    },
    per_dataset=_with_refine({
        **{d: {"size": cite(size, f"{TRIDENT}:configs/{_TRIDENT_CFG[d]}.py:{line} Resize(scale=(2048, {size}))")}
           for d, (size, line) in _TRIDENT_SIZE.items() if size != 448},
        "voc21": {"vocabulary": cite("voc21_proxyclip.txt", f"{TRIDENT}:configs/cfg_voc21.py:5 cls_voc21.txt"),
                  "prob_threshold": cite(0.2, f"{TRIDENT}:configs/cfg_voc21.py:6")},
        "voc20": {"size": cite(336, f"{TRIDENT}:configs/cfg_voc20.py:17 Resize(scale=(2048, 336))"),
                  "vocabulary": cite("voc20_clearclip.txt", f"{TRIDENT}:configs/cfg_voc20.py:5 cls_voc20.txt")},
        "context60": {"size": cite(576, f"{TRIDENT}:configs/cfg_context60.py:16 Resize(scale=(2048, 576))"),
                      "prob_threshold": cite(0.15, f"{TRIDENT}:configs/cfg_context60.py:6")},
        "coco_object": {"vocabulary": cite("coco_object_proxyclip.txt",
                                           f"{TRIDENT}:configs/cfg_coco_object.py:5 cls_coco_object.txt"),
                        "prob_threshold": cite(0.25, f"{TRIDENT}:configs/cfg_coco_object.py:7")},
    }),
    published=published_numbers(TRIDENT_TABLE1, {"voc21": 67.1, "context60": 38.6, "coco_object": 41.1, "voc20": 84.5,
                                        "cityscapes": 42.9, "context59": 42.2, "ade20k": 21.9, "coco_stuff": 28.3},
                       note="CLIP ViT-B/16 row, with the SAM-prompt refinement (dist_test.sh:3 --sam_refine)"),
    not_reproduced=(
        f"fp16 CLIP, DINO and SAM encoder ({TRIDENT}:trident.py:42, :49, :87); gemseg runs fp32",
        "SAM sees the network input with its sides rounded up to 16, not the original file (trident.py:135-140)",
    ),
)

_CC = f"{CORRCLIP}:CorrCLIPv1"
CORRCLIP_TABLE = f"{_CC}/README.md:128 (the table's ViT-B row with SAM2_32 masks)"

CORRCLIP_PRESET = Preset(
    name="corrclip", paper="CorrCLIP, Zhang, Liu & Tang, ICCV 2025 (arXiv 2411.10086)", method="corrclip",
    datasets=("voc21", "voc20", "context59", "context60", "cityscapes", "ade20k", "coco_stuff", "coco_object"),
    model="ViT-B-16-quickgelu", pretrained="metaclip_fullcc",
    proxy=cite("dino-b8", f"{_CC}/configs/base_config.py:6 dino_type='dino_vitb8'"),
    settings={
        **mmseg_resize(CORRCLIP, "CorrCLIPv1/configs/cfg_voc21.py:16 (every cfg_*.py but ADE20K, Cityscapes)", 336),
        "mode": cite("slide", f"{_CC}/corrclip_segmentor.py:196 forward_slide"),
        "crop": cite(336, f"{_CC}/corrclip_segmentor.py:47 slide_crop=336"),
        "stride": cite(112, f"{_CC}/corrclip_segmentor.py:47 slide_stride=112"),
        "templates": cite("imagenet80", f"{_CC}/corrclip_segmentor.py:244 openai_imagenet_template (80 templates)"),
        "vocabulary": cite("synonyms", f"{_CC}/corrclip_segmentor.py:389-400 get_cls_idx, configs/cls_*.txt split "
                                       "on '; ' (gemseg's <dataset>_corrclip.txt, per dataset below)"),
        "background_query": cite(True, f"{_CC}/configs/cls_voc21.txt:1 (the background class is a query)"),
        "logit_scale": cite(40.0, f"{_CC}/corrclip_segmentor.py:47 logit_scale=40"),
        "prob_threshold": cite(None, f"{_CC}/corrclip_segmentor.py:47 prob_thd=0.0"),
        "area_threshold": cite(None, f"{_CC}/corrclip_segmentor.py:200-233 postprocess_result has no area rule"),
        "pamr_steps": cite(0, f"{_CC}/corrclip_segmentor.py has no PAMR"),
        "mask_refine": cite(True, f"{_CC}/corrclip_segmentor.py:216-222 Map Correction (refiner 'masks')"),
        "pos_embed": cite("bicubic-scale", f"{_CC}/open_clip/transformer.py:637-655 interpolate_pos_encoding "
                                           "(w0 + 0.1, scale_factor, bicubic)"),
    },
    per_dataset={
        "voc21": {"vocabulary": cite("voc21_corrclip.txt", f"{_CC}/configs/cfg_voc21.py:5 cls_voc21.txt"),
                  "prob_threshold": cite(0.2, f"{_CC}/configs/cfg_voc21.py:7")},
        "voc20": {"vocabulary": cite("voc20_corrclip.txt", f"{_CC}/configs/cfg_voc20.py:5 cls_voc20.txt")},
        "context59": {"vocabulary": cite("context59_corrclip.txt", f"{_CC}/configs/cfg_context59.py:5 cls_context59.txt")},
        "context60": {"vocabulary": cite("context60_corrclip.txt", f"{_CC}/configs/cfg_context60.py:5 cls_context60.txt"),
                      "prob_threshold": cite(0.15, f"{_CC}/configs/cfg_context60.py:7")},
        "cityscapes": {"vocabulary": cite("cityscapes_corrclip.txt",
                                          f"{_CC}/configs/cfg_city_scapes.py:5 cls_city_scapes.txt"),
                       "size": cite(448, f"{_CC}/configs/cfg_city_scapes.py:17 Resize(scale=(2048, 448))"),
                       "crop": cite(224, f"{_CC}/configs/cfg_city_scapes.py:8 slide_crop=224"),
                       "stride": cite(112, f"{_CC}/configs/cfg_city_scapes.py:7 slide_stride=112")},
        "ade20k": {"vocabulary": cite("ade20k_corrclip.txt", f"{_CC}/configs/cfg_ade20k.py:5 cls_ade20k.txt"),
                   "size": cite(448, f"{_CC}/configs/cfg_ade20k.py:15 Resize(scale=(2048, 448))")},
        "coco_stuff": {"vocabulary": cite("coco_stuff_corrclip.txt",
                                          f"{_CC}/configs/cfg_coco_stuff164k.py:5 cls_coco_stuff.txt")},
        "coco_object": {"vocabulary": cite("coco_object_corrclip.txt",
                                           f"{_CC}/configs/cfg_coco_object.py:5 cls_coco_object.txt"),
                        "prob_threshold": cite(0.25, f"{_CC}/configs/cfg_coco_object.py:7")},
    },
    published=published_numbers(CORRCLIP_TABLE, {"voc21": 74.8, "voc20": 88.8, "context59": 48.8, "context60": 44.2,
                                        "cityscapes": 49.4, "ade20k": 26.9, "coco_stuff": 31.6, "coco_object": 43.7},
                       note="with the published SAM 2 masks (--masks files:data/region_masks/<dataset>); "
                            "SAM2_8 masks generated at run time: README.md:129, average 50.4"),
    not_reproduced=(f"fp16 CLIP, DINO and SAM 2 ({_CC}/corrclip_segmentor.py:56, :66, :265)",
                    "crops zero-padded to a multiple of 56, centred, masks padded with 10000 "
                    "(corrclip_segmentor.py:156-160); gemseg pads right/bottom and the padding is a region of its own"),
)
