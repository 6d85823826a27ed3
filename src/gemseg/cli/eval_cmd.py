"""``gemseg eval``: benchmark a model on a standard dataset under a named protocol (docs/evaluation.md)."""
from __future__ import annotations

import argparse

from .common import add_model_args, add_refine_arg, refine_arg, with_random_refiners

EXAMPLES = """\
examples:
  gemseg eval --dataset voc21 --data-root data/VOCdevkit/VOC2012 --preset sclip
  gemseg eval --dataset ade20k --data-root data/ADEChallengeData2016 --preset gem --limit 50
  torchrun --nproc_per_node=8 -m gemseg.cli eval --dataset coco_stuff --data-root data/coco_stuff164k
  gemseg eval --dataset my_dataset.json --data-root data/mine --preset sclip --mode whole
  gemseg eval --list-presets                   # the paper tables each preset reproduces
  gemseg eval --show-preset sclip              # every setting, and each dataset's own values
  gemseg eval --dataset voc21 --preset sclip --pamr-steps 10 --show-protocol
  gemseg eval --compare runs/a/result.json runs/b/result.json
  gemseg eval --dataset voc21 --data-root data/VOCdevkit/VOC2012 --preset gem --holdout 0.5 \\
              --sweep prob_threshold=0:0.95:0.05 logit_scale=40,50,65 area_threshold=none,0.1

Rerunning the same command continues an interrupted run (its state is in OUT/state); --overwrite
(alias --restart) starts over. Results: OUT/result.json and OUT/result.md; with --sweep
OUT/sweep.json, OUT/sweep.md and OUT/sweep.png (every combination from one model pass per image).
"""

# protocol settings that have a flag, with the flag's parser
_PROTOCOL_FLAGS = ("resize", "size", "max_long_side", "interpolation", "mode", "crop", "stride", "templates",
                   "vocabulary", "background_query", "background_prompts", "logit_scale", "prob_threshold",
                   "area_threshold", "pamr_steps", "pamr_dilations", "point_threshold", "point_normalize",
                   "pos_embed", "point_classes")


def _optional_float(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def _prompt_list(text: str) -> tuple[str, ...] | None:
    return None if text.lower() == "none" else tuple(p.strip() for p in text.split(",") if p.strip())


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def register(subparsers) -> None:
    from ..names import PRESETS  # the registries' names without importing them (torch)

    p = subparsers.add_parser(
        "eval", help="benchmark mIoU / p-mIoU on a standard dataset under a named protocol",
        description="Evaluate a model on a dataset read from its standard layout, under a protocol preset "
                    "whose settings can each be overridden. Data-parallel under torchrun, resumable, with "
                    "JSON and Markdown reports. Datasets, presets and metrics: docs/evaluation.md.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", help="built-in dataset name (see --list-datasets) or a metadata .json file")
    p.add_argument("--data-root", help="the dataset's root folder")
    p.add_argument("-o", "--out", "--output", dest="out", metavar="DIR",
                   help="output folder (default: gemseg-eval/<dataset>-<preset>)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N images (quick checks)")
    p.add_argument("--overwrite", "--restart", dest="restart", action="store_true",
                   help="start over: discard an earlier run's state in --out (default: continue it)")
    p.add_argument("--save-preds", type=int, default=0, metavar="K",
                   help="save label maps (OUT/preds) and visualizations (OUT/vis) of the first K images")
    p.add_argument("--save-every", type=int, default=20, metavar="N", help="save the run state every N images")
    p.add_argument("--workers", type=int, default=2, help="image loading processes per rank (default: 2)")
    p.add_argument("--crop-batch", type=int, default=8, help="sliding-window crops per forward pass")
    p.add_argument("-q", "--quiet", "--no-progress", dest="no_progress", action="store_true", help="no progress bar")
    sw = p.add_argument_group("post-processing sweep (one model pass per image, every combination scored)")
    sw.add_argument("--sweep", nargs="+", metavar="SETTING=VALUES",
                    help="sweep the label rules logit_scale, prob_threshold, area_threshold; VALUES is "
                         "START:STOP:STEP (STOP included when on the grid), A,B,C, or none (threshold off)")
    sw.add_argument("--holdout", type=float, metavar="F",
                    help="with --sweep: choose the best combination on the other images and report it on "
                         "this fraction of them, held out by a hash of the image ids")
    info = p.add_argument_group("information (nothing is evaluated)")
    info.add_argument("--list-datasets", action="store_true", help="list the built-in datasets")
    info.add_argument("--list-presets", action="store_true",
                      help="list the presets: the paper table, model, method, datasets and sources of each")
    info.add_argument("--show-preset", metavar="NAME", choices=PRESETS,
                      help="print a preset in full, with each dataset's own values")
    info.add_argument("--show-protocol", action="store_true",
                      help="print the protocol --dataset/--preset and the flags resolve to")
    info.add_argument("--compare", nargs="+", metavar="RESULT", help="print result.json files side by side")
    add_protocol_args(p)
    add_refine_arg(p.add_argument_group("refinement (after the protocol's PAMR, if any)"))
    add_model_args(p)
    p.set_defaults(func=main)


def add_protocol_args(p: argparse.ArgumentParser) -> None:
    """--preset and one flag per protocol setting (each overrides the preset; unset flags are absent
    from the namespace, see :func:`protocol_overrides`)."""
    from ..names import INTERPOLATIONS, MODES, POINT_CLASSES, POINT_NORMALIZATIONS, POS_EMBED_MODES, PRESETS, RESIZES

    g = p.add_argument_group("protocol (each flag overrides the preset; see --show-preset)")
    g.add_argument("--preset", default="gem", choices=PRESETS, help="protocol preset (default: %(default)s)")
    S = argparse.SUPPRESS
    g.add_argument("--resize", choices=RESIZES, default=S, help="fixed size, short side, or none")
    g.add_argument("--size", type=int, default=S, help="resize target in pixels")
    g.add_argument("--max-long-side", type=int, default=S, help="short_side resize: cap of the long side")
    g.add_argument("--interpolation", choices=INTERPOLATIONS, default=S)
    g.add_argument("--mode", choices=MODES, default=S, help="whole image or sliding window")
    g.add_argument("--crop", type=int, default=S, help="sliding-window crop size")
    g.add_argument("--stride", type=int, default=S, help="sliding-window stride")
    g.add_argument("--templates", default=S, help="single, imagenet80, or a file with one template per line")
    g.add_argument("--vocabulary", default=S, metavar="names|synonyms|FILE.txt",
                   help="class names only, all synonyms, or a class file (one line per class)")
    g.add_argument("--background-query", action=argparse.BooleanOptionalAction, default=S,
                   help="score background by its own queries (--no-background-query: background where the "
                        "top foreground probability is below --prob-threshold)")
    g.add_argument("--background", "--background-prompts", dest="background_prompts", type=_prompt_list,
                   default=S, metavar="A,B,C|none", help="queries that replace the background class's names")
    g.add_argument("--logit-scale", type=float, default=S, help="softmax(logit_scale * cosine)")
    g.add_argument("--prob-threshold", type=_optional_float, default=S, metavar="P|none",
                   help="top probability below P -> background")
    g.add_argument("--area-threshold", type=_optional_float, default=S, metavar="F|none",
                   help="drop foreground classes covering at most F of the foreground")
    g.add_argument("--pamr-steps", type=int, default=S, help="PAMR refinement iterations (0: off)")
    g.add_argument("--pamr-dilations", type=_int_list, default=S, metavar="8,16")
    g.add_argument("--point-threshold", type=float, default=S, help="point labels: binarization threshold")
    g.add_argument("--point-normalize", choices=POINT_NORMALIZATIONS, default=S,
                   help="point labels: per-map min-max normalization or raw cosine")
    g.add_argument("--pos-embed", choices=POS_EMBED_MODES, default=S,
                   help="position-embedding resampling: bicubic-aa (gem-torch), bicubic-scale (SCLIP, ClearCLIP, "
                        "NACLIP), bicubic (MaskCLIP), bilinear (CLIP Surgery)")
    g.add_argument("--point-classes", choices=POINT_CLASSES, default=S,
                   help="point labels: score the classes with a yes point in the image, or any yes/no point")


def protocol_overrides(args: argparse.Namespace) -> dict:
    """The protocol settings given as flags."""
    return {k: getattr(args, k) for k in _PROTOCOL_FLAGS if hasattr(args, k)}


def check_data_root(spec, root: str | None) -> None:
    """Refuse a missing or absent ``--data-root`` before the model is built (which takes a while)."""
    import os

    hint = f" (conventionally .../{spec.root})" if spec.root else ""
    if not root:
        raise ValueError(f"--data-root is required{hint}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"--data-root {root} is not a folder{hint}")


def with_preset_method_settings(model, args: argparse.Namespace, spec):
    """``model`` with the method settings the preset gives for ``spec`` (``--method-setting`` wins), when the
    model runs the preset's method (ResCLIP's per-dataset weights); otherwise ``model`` itself. ``gemseg eval``
    and ``gemseg ablate`` (on each setting's model, per dataset) both apply it."""
    from ..eval.protocols import get_preset
    from .common import settings_kwargs

    record = get_preset(args.preset)
    values = record.method_values(spec.name) if record.method == model.method else {}
    if not values:
        return model
    given = settings_kwargs(model.method, getattr(args, "method_setting", None)).get("method_settings", {})
    return model.variant(method_settings={**values, **given})


def with_preset_proxy_settings(args: argparse.Namespace, spec) -> argparse.Namespace:
    """``args`` with the preset's proxy settings for ``spec`` (CASS's, Trident's) as the first
    ``--method-setting`` items, so that the given ones win, when the model runs the preset's method;
    otherwise ``args`` itself."""
    from ..eval.presets_propagation import proxy_settings_text
    from ..eval.protocols import get_preset

    if getattr(args, "method", None) != get_preset(args.preset).method:
        return args
    text = proxy_settings_text(args.preset, spec.name)
    given = list(getattr(args, "method_setting", None) or [])
    return argparse.Namespace(**{**vars(args), "method_setting": [text, *given]}) if text else args


def preset_settings_line(preset: str, dataset: str) -> str:
    """What the preset hands the model on ``dataset`` besides the protocol: its method's own settings and its
    proxy's, as ``--method-setting`` would write them (``-``: none)."""
    from ..eval.presets_propagation import proxy_settings_text
    from ..eval.protocols import get_preset

    own = get_preset(preset).method_values(dataset)
    text = ",".join(f"{k}={_setting_text(v)}" for k, v in own.items())
    return ",".join(t for t in (text, proxy_settings_text(preset, dataset)) if t) or "-"


def _setting_text(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


def _show_preset(name: str) -> None:
    from ..eval import describe, list_datasets, resolve_protocol
    from ..eval.presets_propagation import PROXY_SETTINGS
    from ..eval.protocols import get_preset

    protocol, source = resolve_protocol(name)
    record = get_preset(name)
    print(f"preset {name}:\n{describe(protocol, source)}\n\nper-dataset values of this preset:")
    for dataset in list_datasets():
        values = record.per_dataset.get(dataset, {})
        print(f"  {dataset:<15} " + ("; ".join(f"{k}={c.value!r} ({c.source})" for k, c in values.items()) or "-"))
    proxied = PROXY_SETTINGS.get(name, {})
    if record.method_settings or record.per_dataset_method or proxied:
        print(f"\nmethod settings (with --method {record.method}, its own and its proxy's; --method-setting "
              "NAME=VALUE overrides them):")
        print("  " + ("; ".join(f"{k}={c.value!r} ({c.source})" for k, c in record.method_settings.items()) or "-"))
        for dataset in dict.fromkeys([*record.per_dataset_method, *proxied]):
            values = {**record.per_dataset_method.get(dataset, {}), **proxied.get(dataset, {})}
            print(f"  {dataset:<15} " + "; ".join(f"{k}={c.value!r} ({c.source})" for k, c in values.items()))
    print("\npublished (mIoU; * second-hand):")
    for n in record.published:
        print(f"  {n.dataset:<15} {n.miou:6.2f}{'*' if n.second_hand else ' '} {n.source}" + (f"; {n.note}" if n.note else ""))
    for note in record.not_reproduced:
        print(f"not reproduced: {note}")


def _list_datasets() -> None:
    from ..eval import list_datasets, load_dataset_spec

    for name in list_datasets():
        spec = load_dataset_spec(name)
        classes = f"{spec.num_classes} classes" if spec.type == "dense" else "point labels"
        print(f"{name:<15} {classes:<14} root {spec.root or '-':<22} {spec.title}")


def main(args: argparse.Namespace) -> int:
    from ..eval import compare_markdown, describe, evaluate, load_dataset_spec, load_result, resolve_protocol
    from ..eval.protocols import get_preset

    if args.list_datasets:
        _list_datasets()
        return 0
    if args.list_presets:
        from ..eval.protocols import preset_table

        print(preset_table())
        return 0
    if args.compare:
        print(compare_markdown([load_result(p) for p in args.compare], names=args.compare), end="")
        return 0
    if args.show_preset:
        _show_preset(args.show_preset)
        return 0
    if not args.dataset:
        raise ValueError("--dataset is required (see --list-datasets)")
    spec = load_dataset_spec(args.dataset)
    overrides = protocol_overrides(args)
    warn_unused(spec, overrides)
    protocol, source = resolve_protocol(args.preset, spec, **overrides)
    protocol.check_dataset(spec)
    protocol = with_random_refiners(protocol, args)
    if args.show_protocol:
        print(f"dataset {spec.name}, preset {args.preset}:\n{describe(protocol, source)}")
        print(f"method settings (with --method {get_preset(args.preset).method}; --method-setting overrides them): "
              f"{preset_settings_line(args.preset, spec.name)}")
        return 0
    check_data_root(spec, args.data_root)
    if args.save_preds and spec.type != "dense":
        raise ValueError("--save-preds saves label maps, which point-label datasets do not have")
    if args.holdout is not None and not args.sweep:
        raise ValueError("--holdout chooses among the combinations of a --sweep; give --sweep too")
    if args.sweep:
        return _sweep(args, spec, protocol, source, overrides)
    out = args.out or f"gemseg-eval/{spec.name}-{args.preset}"
    check_weights_early(args)
    dist = distributed(args)
    try:
        from .common import build_model

        model = with_preset_method_settings(build_model(with_preset_proxy_settings(args, spec)), args, spec)
        result = evaluate(model, spec, args.data_root, protocol, protocol_source=source, dist=dist,
                          out_dir=out, limit=args.limit,
                          save_preds=args.save_preds, save_every=args.save_every, num_workers=args.workers,
                          crop_batch=args.crop_batch, restart=args.restart, progress=not args.no_progress,
                          refine=refine_arg(args))
    finally:
        dist.close()
    if dist.is_main:
        metric = "p-mIoU" if spec.type == "points" else "mIoU"
        value = result["metrics"][metric]
        shown = f"{value:.2f}" if value is not None else "none"
        failed = result["speed"].get("failed_images", 0)
        print(f"{spec.name} {args.preset}: {metric} {shown} over {result['dataset']['num_images'] - failed} images"
              + (f" ({failed} skipped for their masks, listed in result.json; a rerun retries them)" if failed else "")
              + f" -> {out}/result.json")
        return 1 if failed else 0
    return 0


def _sweep(args: argparse.Namespace, spec, protocol, source: dict, overrides: dict) -> int:
    """``--sweep``: every combination from one model pass per image (errors propagate to main)."""
    import warnings

    from ..eval.sweep import parse_sweep, run_sweep

    grid = parse_sweep(args.sweep)
    if spec.type != "dense":
        raise ValueError(f"--sweep scores dense label maps, and {spec.name} has point labels; run one "
                         "gemseg eval per --point-threshold instead")
    if args.save_preds:
        raise ValueError("--save-preds saves one setting's label maps; run gemseg eval without --sweep for that")
    given = [k for k in grid if k in overrides]
    if given:
        warnings.warn(f"{', '.join('--' + k.replace('_', '-') for k in given)} ignored: swept by --sweep",
                      stacklevel=2)
    out = args.out or f"gemseg-eval/{spec.name}-{args.preset}-sweep"
    check_weights_early(args)
    dist = distributed(args)
    try:
        from .common import build_model

        model = with_preset_method_settings(build_model(with_preset_proxy_settings(args, spec)), args, spec)
        table = run_sweep(model, spec, args.data_root, protocol, grid, out_dir=out, holdout=args.holdout,
                          limit=args.limit, protocol_source=source, dist=dist, save_every=args.save_every,
                          num_workers=args.workers, crop_batch=args.crop_batch, restart=args.restart,
                          progress=not args.no_progress, refine=refine_arg(args))
    finally:
        dist.close()
    if dist.is_main:
        best = table["best"]
        if best is None:
            print(f"{spec.name} sweep: no combination has an mIoU -> {out}/sweep.json")
        else:
            chosen = " ".join(f"{k}={v}" for k, v in best["settings"].items())
            value = best["reported"]["mIoU"]
            print(f"{spec.name} sweep of {len(table['rows'])} combinations: best {chosen} (chosen on "
                  f"{best['chosen_on']}), mIoU {value:.2f} on {best['reported_on']} -> {out}/sweep.md")
    return 0


_DENSE_ONLY = ("vocabulary", "background_query", "background_prompts", "logit_scale", "prob_threshold", "area_threshold")
_POINTS_ONLY = ("point_threshold", "point_normalize", "point_classes")


def warn_unused(spec, overrides: dict) -> None:
    import warnings

    unused = [k for k in (_POINTS_ONLY if spec.type == "dense" else _DENSE_ONLY) if k in overrides]
    if unused:
        flags = ", ".join("--" + k.replace("_", "-") for k in unused)
        one = len(unused) == 1
        warnings.warn(f"{flags} {'does' if one else 'do'} not apply to {spec.name} ({spec.type} labels) and "
                      f"{'is' if one else 'are'} ignored", stacklevel=2)


def check_weights_early(args: argparse.Namespace) -> None:
    """Offline, weights sure to be missing are said before open_clip / transformers are imported
    (:mod:`gemseg.cli.precheck`); the hub probe runs first, as :func:`~gemseg.cli.common.build_model` does."""
    from . import precheck
    from .common import prepare_hub

    prepare_hub(args)
    precheck.check(args)


def distributed(args: argparse.Namespace):
    """Join torchrun's process group; each rank uses its own GPU when the run is on CUDA."""
    import torch

    from ..eval import init_from_env

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dist = init_from_env(device)
    if dist.world_size > 1 and torch.device(device).type == "cuda" and torch.device(device).index is None:
        args.device = f"cuda:{dist.local_rank}"
    return dist
