"""The presets of the 2025 CLIP-side methods: SC-CLIP, SFP and ResCLIP on its three published bases.

Every value cites the line it was read from at the newest commit of the official repository (read
2026-12-04). SC-CLIP and ResCLIP carry no licence file, SFP is MIT; only facts are taken (values, class
names, published numbers). The methods' own settings (ResCLIP's per-dataset weights) are
``method_settings`` / ``per_dataset_method``: they reach the model, not the protocol.
"""
from __future__ import annotations

from .preset import EIGHT, OV_STITCHER_TABLE1, Preset, Published, cite, mmseg_resize, published_numbers

SCCLIP = "SuleBai/SC-CLIP@0417ba92851e"
SFP = "Kimsure/SFP@2804f5b7c628"
RESCLIP = "yvhangyang/ResCLIP@0e085f7f52f0"




def _sclip_family(repo: str, segmentor: str, lines: dict, templates: str, pos_embed: str,
                  configs: str = "configs") -> dict:
    """The settings SC-CLIP, SFP and ResCLIP share with SCLIP's harness, each cited in ``repo``."""
    seg = f"{repo}:{segmentor}"
    return {
        "mode": cite("slide", f"{seg}:{lines['slide']} slide_crop > 0"),
        "crop": cite(224, f"{seg}:{lines['defaults']} slide_crop=224"),
        "stride": cite(112, f"{seg}:{lines['defaults']} slide_stride=112"),
        "templates": cite("imagenet80", f"{seg}:{lines['templates']} openai_imagenet_template ({repo}:{templates}, "
                                        "80 templates)"),
        "vocabulary": cite("synonyms", f"{seg}:{lines['split']} configs/cls_*.txt split on ', '; equal to SCLIP's "
                                       "files (compared)"),
        "background_query": cite(True, f"{repo}:{configs}/cls_voc21.txt:1 (the background class is a query)"),
        "logit_scale": cite(40.0, f"{seg}:{lines['logit']} logit_scale=40"),
        "prob_threshold": cite(None, f"{seg}:{lines['logit']} prob_thd=0.0"),
        "area_threshold": cite(None, f"{seg}:{lines['area']} area_thd=None"),
        "pamr_steps": cite(0, f"{seg}:{lines['logit']} pamr_steps=0 (no PAMR on the final scores)"),
        "pos_embed": cite("bicubic-scale", f"{repo}:{pos_embed} interpolate_pos_encoding (w0 + 0.1, scale_factor, "
                                           "bicubic)"),
    }


SCCLIP_PRESET = Preset(
    name="sc-clip", paper="SC-CLIP, Bai et al. (arXiv 2411.15869)", method="sc-clip", datasets=EIGHT,
    settings={
        **mmseg_resize(SCCLIP, "configs/cfg_voc21.py:16 (every cfg_*.py but Cityscapes)", 336),
        **_sclip_family(SCCLIP, "scclip_segmentor.py", {"slide": 147, "defaults": 21, "templates": 45, "split": 217,
                                                        "logit": 20, "area": 21},
                        "prompts/imagenet_template.py:169", "clip/model.py:375-393"),
    },
    per_dataset={
        "voc21": {"area_threshold": cite(0.1, f"{SCCLIP}:configs/cfg_voc21.py:6"),
                  "logit_scale": cite(50.0, f"{SCCLIP}:configs/cfg_voc21.py:7"),
                  "prob_threshold": cite(0.15, f"{SCCLIP}:configs/cfg_voc21.py:7")},
        "context60": {"prob_threshold": cite(0.15, f"{SCCLIP}:configs/cfg_context60.py:6")},
        "coco_object": {"logit_scale": cite(55.0, f"{SCCLIP}:configs/cfg_coco_object.py:6"),
                        "prob_threshold": cite(0.35, f"{SCCLIP}:configs/cfg_coco_object.py:6")},
        "cityscapes": {"size": cite(560, f"{SCCLIP}:configs/cfg_city_scapes.py:14 Resize(scale=(2048, 560))")},
    },
    published=published_numbers(OV_STITCHER_TABLE1, {"voc21": 64.6, "context60": 36.8, "coco_object": 37.7,
                                                     "voc20": 84.3, "cityscapes": 41.0, "context59": 40.1,
                                                     "ade20k": 20.1, "coco_stuff": 26.6}, second_hand=True,
                                note="SC-CLIP's ViT-B/16 row as OV-Stitcher tabulates it (SC-CLIP's own table was not "
                                     "readable here; its README has none); the eight average to 43.9, as printed"),
    not_reproduced=("statistics per image; row-major anomaly positions (the official code divides by the row count, "
                    "the same on its square crops)",),
)

_SFP_VOCAB = "'people' where SCLIP's file has 'person', otherwise the same (compared)"
SFP_PRESET = Preset(
    name="sfp", paper="SFP, Jin et al., ICCV 2025", method="sfp", datasets=EIGHT,
    settings={
        **mmseg_resize(SFP, "SFP_ICCV/configs/cfg_voc21.py:19 (every cfg_*.py but ADE20K, Cityscapes)", 336),
        **_sclip_family(SFP, "SFP_ICCV/SFP_segmentor.py", {"slide": 150, "defaults": 24, "templates": 48,
                                                           "split": 219, "logit": 23, "area": 24},
                        "SFP_ICCV/prompts/imagenet_template.py:169", "SFP_ICCV/clip/model.py:396-414",
                        configs="SFP_ICCV/configs"),
    },
    per_dataset={
        "voc21": {"vocabulary": cite("voc21_sfp.txt", f"{SFP}:SFP_ICCV/configs/cls_voc21.txt:16 {_SFP_VOCAB}"),
                  "area_threshold": cite(0.1, f"{SFP}:SFP_ICCV/configs/cfg_voc21.py:6"),
                  "logit_scale": cite(50.0, f"{SFP}:SFP_ICCV/configs/cfg_voc21.py:8"),
                  "prob_threshold": cite(0.15, f"{SFP}:SFP_ICCV/configs/cfg_voc21.py:8")},
        "voc20": {"vocabulary": cite("voc20_sfp.txt", f"{SFP}:SFP_ICCV/configs/cls_voc20.txt:15 {_SFP_VOCAB}")},
        "context60": {"prob_threshold": cite(0.15, f"{SFP}:SFP_ICCV/configs/cfg_context60.py:6")},
        "coco_object": {"logit_scale": cite(55.0, f"{SFP}:SFP_ICCV/configs/cfg_coco_object.py:7"),
                        "prob_threshold": cite(0.35, f"{SFP}:SFP_ICCV/configs/cfg_coco_object.py:7")},
        "ade20k": {"size": cite(384, f"{SFP}:SFP_ICCV/configs/cfg_ade20k.py:14 Resize(scale=(2048, 384))")},
        "cityscapes": {"size": cite(560, f"{SFP}:SFP_ICCV/configs/cfg_city_scapes.py:14 Resize(scale=(2048, 560))"),
                       "vocabulary": cite("cityscapes_sfp.txt", f"{SFP}:SFP_ICCV/configs/cls_city_scapes.txt:12 "
                                                                f"{_SFP_VOCAB}")},
    },
    published=(Published("voc21", 61.4, f"{SFP}:SFP_ICCV/test/20251207_184940/20251207_184940.log:261 (the "
                                        "repository's own test log; its config at :61-72 is cfg_voc21.py's)",
                         note="a logged run of the released code, not the paper's table"),
               *published_numbers(OV_STITCHER_TABLE1, {"voc21": 62.9, "context60": 37.2, "coco_object": 37.9,
                                                       "voc20": 84.5, "cityscapes": 41.1, "context59": 39.9,
                                                       "ade20k": 20.8, "coco_stuff": 26.4}, second_hand=True,
                                  note="SFP's ViT-B/16 row as OV-Stitcher tabulates it (SFP's own table was not "
                                       "readable here); the eight average to 43.8, not the 44.0 printed beside them")),
)

# ResCLIP: one config per dataset for every base (test_all.sh selects the base with --arch/--attn)
_RES_LINES = {"voc21": (6, 7, 8, 10, 11, 20), "context60": (6, None, 7, 9, 10, 19),
              "coco_object": (6, None, 7, 9, 10, 19), "voc20": (None, 6, 7, 9, 10, 19),
              "cityscapes": (None, None, 6, 8, 9, 18), "context59": (None, None, 6, 8, 9, 18),
              "ade20k": (None, None, 6, 8, 9, 18), "coco_stuff": (None, None, 6, 8, 9, 18)}
_RES_VALUES = {  # temp_thd, attn_rcs_weights, attn_sfr_weights, prob_thd (None: the default 0)
    "voc21": (0.50, (2.0, 0.3), (2.2, 0.7), 0.1), "context60": (0.30, (2.0, 0.3), (1.8, 0.7), 0.1),
    "coco_object": (0.11, (2.0, 0.4), (1.8, 0.7), 0.1), "voc20": (0.10, (2.0, 0.6), (2.1, 0.6), None),
    "cityscapes": (0.10, (2.0, 0.2), (2.1, 0.6), None), "context59": (0.25, (2.0, 0.4), (1.8, 0.7), None),
    "ade20k": (0.25, (2.0, 0.3), (2.1, 0.7), None), "coco_stuff": (0.11, (2.0, 0.4), (1.8, 0.7), None)}
_RES_FILES = {"cityscapes": "city_scapes", "coco_stuff": "coco_stuff164k"}


def _resclip_dataset(d: str) -> tuple[dict, dict]:
    """(protocol values, method settings) of ResCLIP's ``configs/cfg_<d>.py``."""
    cfg = f"{RESCLIP}:configs/cfg_{_RES_FILES.get(d, d)}.py"
    prob, whole, temp, rcs, sfr, resize = _RES_LINES[d]
    t, r, s, p = _RES_VALUES[d]
    protocol = {}
    if prob is not None:
        protocol["prob_threshold"] = cite(p, f"{cfg}:{prob}")
    if whole is not None:
        protocol["mode"] = cite("whole", f"{cfg}:{whole} slide_crop=0 (one pass, resclip_segmentor.py:148-150)")
    if d == "cityscapes":
        protocol["size"] = cite(560, f"{cfg}:{resize} Resize(scale=(2048, 560))")
    method = {"temp_thd": cite(t, f"{cfg}:{temp}"), "rcs_weights": cite(r, f"{cfg}:{rcs} attn_rcs_weights"),
              "sfr_weights": cite(s, f"{cfg}:{sfr} attn_sfr_weights"),
              "delete_same_entity": cite(True, f"{cfg}:{temp + 1}")}
    return protocol, method


_RES_TABLE_W = f"{RESCLIP}:figs/main_results_w.png (README.md:34; ResCLIP Table, with background, ViT-B/16 rows)"
_RES_TABLE_WO = f"{RESCLIP}:figs/main_results_wo.png (README.md:30; ResCLIP Table, without background, ViT-B/16 rows)"
# the ViT-B/16 "+ResCLIP" rows: VOC21, Context60, Object | VOC20, Context59, Stuff, Cityscapes, ADE20K
_RES_PUBLISHED = {"naclip": ((61.1, 33.5, 35.0), (86.0, 36.8, 24.7, 35.9, 18.0)),
                  "sclip": ((60.7, 32.9, 34.3), (84.6, 35.8, 23.9, 34.4, 17.6)),
                  "clearclip": ((59.0, 32.9, 34.0), (87.1, 36.4, 24.3, 34.5, 17.8))}
_ARCH = {"naclip": "wo_resi resclip (README.md:103, the main results)", "sclip": "w_resi sclip",
         "clearclip": "wo_resi clearclip"}


def _resclip_preset(base: str) -> Preset:
    w, wo = _RES_PUBLISHED[base]
    per = {d: _resclip_dataset(d) for d in EIGHT}
    return Preset(
        name="resclip" if base == "naclip" else f"resclip-{base}",
        paper=f"ResCLIP on {base}, Yang et al., CVPR 2025 (arXiv 2411.15851)", method=f"{base}+resclip",
        datasets=EIGHT,
        settings={
            **mmseg_resize(RESCLIP, "configs/cfg_ade20k.py:18 (every cfg_*.py but Cityscapes)", 336),
            **_sclip_family(RESCLIP, "resclip_segmentor.py", {"slide": 145, "defaults": "25-26", "templates": 39,
                                                              "split": 219, "logit": "24-25", "area": 25},
                            "prompts/imagenet_template.py:1", "clip/model.py:377-394"),
        },
        per_dataset={d: p for d, (p, _) in per.items() if p},
        method_settings={"gaussian_std": cite(5.0, f"{RESCLIP}:README.md:103 test_all.sh {_ARCH[base]} 5"),
                         "use_rcs": cite(True, f"{RESCLIP}:configs/base_config.py:5"),
                         "use_sfr": cite(True, f"{RESCLIP}:configs/base_config.py:6")},
        per_dataset_method={d: m for d, (_, m) in per.items()},
        published=(*(Published(d, v, _RES_TABLE_W) for d, v in zip(("voc21", "context60", "coco_object"), w)),
                   *(Published(d, v, _RES_TABLE_WO) for d, v in
                     zip(("voc20", "context59", "coco_stuff", "cityscapes", "ade20k"), wo))),
        not_reproduced=(
            f"the base is chosen by test_all.sh ARCH ATTN ({_ARCH[base]}); one config per dataset serves every base",
            "whole-image passes (VOC21, VOC20): the official code drops the pixels past the last full patch "
            "(clip/model.py:120-122 unfold); gemseg pads to a multiple of the patch and crops back",
            "fp16 rounding of the SFR map is kept (ResCLIPConfig.sfr_fp16); CLIP itself runs in gemseg's precision",
        ),
    )


RESCLIP_PRESETS = tuple(_resclip_preset(b) for b in ("naclip", "sclip", "clearclip"))
PRESETS_2025: tuple[Preset, ...] = (SCCLIP_PRESET, SFP_PRESET, *RESCLIP_PRESETS)
