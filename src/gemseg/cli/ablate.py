"""``gemseg ablate``: the GEM paper's ablations over datasets the harness reads (docs/ablations.md)."""
from __future__ import annotations

import argparse
import sys

from .common import add_model_args, with_random_refiners
from .eval_cmd import add_protocol_args, protocol_overrides

EXAMPLES = """\
examples:
  gemseg ablate --dataset voc21 --data-root data/VOCdevkit/VOC2012 --sweep iterations
  gemseg ablate --dataset voc21 --data-root data/VOCdevkit/VOC2012 \\
                --dataset context60 --data-root data/VOCdevkit/VOC2010 --sweep all --out runs/ablation
  gemseg ablate --dataset ade20k --data-root data/ADEChallengeData2016 \\
                --grid iterations=0,1,2 temperature=adaptive,0.1 --limit 200
  torchrun --nproc_per_node=8 -m gemseg.cli ablate --dataset voc21 --data-root data/VOCdevkit/VOC2012 --sweep all
  gemseg ablate --dataset voc21 --data-root data/VOCdevkit/VOC2012 --sweep depth --show-plan
  gemseg ablate --dataset voc21 --data-root data/VOCdevkit/VOC2012 --preset resclip --method naclip+resclip \
                --grid method=naclip+resclip,naclip,sclip+resclip,sclip      # what the plug-in adds per base
  gemseg ablate --dataset voc21 --data-root data/VOCdevkit/VOC2012 --method naclip \
                --grid method=naclip,naclip+resclip refine=none,pamr              # methods x plug-ins x post-processing

sweeps (each varies one GEM setting of the base given by the GEM options):
  projections  q, k, v alone and the ensemble      temperature  adaptive, fixed 0.001 ... 100
  iterations   0 to 5                              depth        1 (no GEM) to blocks + 1
  l2           L2 normalization off / on           mlp          MLP on the GEM path off / on
  all          every sweep above

Each --data-root belongs to the --dataset before it. Rerunning the same command skips finished
settings and continues a half-done one; --overwrite (alias --restart) starts over. Results:
OUT/ablation.json, OUT/ablation.md, OUT/plots/*.png, and one eval run folder per setting in
OUT/runs/<dataset>/.
"""


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ablate", help="GEM ablations (projections, temperature, iterations, depth, L2, MLP) over datasets",
        description="Evaluate the GEM settings of named sweeps or a grid on one or more datasets, each "
                    "setting in its own resumable `gemseg eval` run on one shared model, and write a table "
                    "(JSON, Markdown) and plots. Data-parallel under torchrun. See docs/ablations.md.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", action="append", default=[], metavar="NAME",
                   help="built-in dataset name or metadata .json; repeat for several datasets")
    p.add_argument("--data-root", action="append", default=[], metavar="DIR",
                   help="the root folder of the --dataset given before it")
    p.add_argument("--sweep", action="extend", type=_names, default=[], metavar="NAME",
                   help="projections, temperature, iterations, depth, l2, mlp or all (repeat or comma-separate)")
    p.add_argument("--grid", nargs="+", action="extend", default=[], metavar="SETTING=V1,V2",
                   help="every combination of these values, e.g. iterations=0,1,2 temperature=adaptive,0.1 "
                        "(settings: depth, iterations, temperature, projections, l2, mlp; method=naclip,"
                        "naclip+resclip varies the method, plug-ins included; refine=none,pamr the "
                        "post-processing, any registered refiner)")
    p.add_argument("-o", "--out", "--output", dest="out", metavar="DIR",
                   help="output folder (default: gemseg-ablate/<datasets>-<preset>)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N images of each dataset")
    p.add_argument("--overwrite", "--restart", dest="restart", action="store_true",
                   help="start over: discard earlier results and states in --out (default: continue)")
    p.add_argument("--show-plan", action="store_true", help="print the settings and run folders, evaluate nothing")
    p.add_argument("--no-plots", action="store_true", help="write the tables only")
    p.add_argument("--save-every", type=int, default=20, metavar="N", help="save each run's state every N images")
    p.add_argument("--workers", type=int, default=2, help="image loading processes per rank (default: 2)")
    p.add_argument("--crop-batch", type=int, default=8, help="sliding-window crops per forward pass")
    p.add_argument("-q", "--quiet", "--no-progress", dest="no_progress", action="store_true", help="no progress bars")
    add_protocol_args(p)
    add_model_args(p)
    p.set_defaults(func=main)


def _datasets(args: argparse.Namespace):
    from ..eval import load_dataset_spec, resolve_protocol
    from ..eval.ablation import AblationDataset
    from .eval_cmd import check_data_root, warn_unused

    if not args.dataset:
        raise ValueError("--dataset is required (see gemseg eval --list-datasets)")
    if len(args.data_root) != len(args.dataset):
        raise ValueError(f"give one --data-root after each --dataset (got {len(args.dataset)} datasets and "
                         f"{len(args.data_root)} roots)")
    overrides = protocol_overrides(args)
    datasets = []
    for name, root in zip(args.dataset, args.data_root):
        spec = load_dataset_spec(name)
        check_data_root(spec, root)
        warn_unused(spec, overrides)
        protocol, source = resolve_protocol(args.preset, spec, **overrides)
        protocol.check_dataset(spec)
        protocol = with_random_refiners(protocol, args)
        datasets.append(AblationDataset(spec, root, protocol, source, args.limit))
    return datasets


def _with_proxy_settings(args: argparse.Namespace, datasets) -> argparse.Namespace:
    """``args`` with the preset's proxy settings, as ``gemseg eval`` gives them (one proxy serves every
    dataset, so the datasets must agree on them)."""
    from .eval_cmd import with_preset_proxy_settings

    options = [with_preset_proxy_settings(args, d.spec) for d in datasets]
    texts = {tuple(o.method_setting) for o in options}
    if len(texts) > 1:
        raise ValueError(f"preset {args.preset} gives {args.method}'s proxy different settings on "
                         f"{', '.join(d.spec.name for d in datasets)}, and one ablation holds one proxy: "
                         "ablate one dataset at a time")
    return options[0]


def main(args: argparse.Namespace) -> int:
    from ..eval.ablation import SWEEPS, ablation_markdown, parse_grid, plan_settings, run_ablation
    from .eval_cmd import check_weights_early, distributed, with_preset_method_settings

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    unknown = [s for s in args.sweep if s not in (*SWEEPS, "all")]
    if unknown:
        raise ValueError(f"unknown sweep {unknown[0]!r}; choose from {', '.join(SWEEPS)}, all")
    grid = parse_grid(args.grid)
    if not args.sweep and not grid:
        raise ValueError("give --sweep NAME (projections, temperature, iterations, depth, l2, mlp, all) "
                         "or --grid SETTING=V1,V2")
    datasets = _datasets(args)
    out = args.out or f"gemseg-ablate/{'-'.join(d.spec.name for d in datasets)}-{args.preset}"
    check_weights_early(args)
    dist = distributed(args)
    try:
        from .common import build_model, random_refiners

        model = build_model(_with_proxy_settings(args, datasets))
        settings = plan_settings(model.config, sweeps=args.sweep, grid=grid, num_blocks=len(model.backbone.blocks),
                                 method=model.method)
        if args.show_plan:
            if dist.is_main:
                _print_plan(settings, datasets, out, args.preset)
            return 0
        log = (lambda line: print(f"gemseg ablate: {line}", file=sys.stderr, flush=True))
        table = run_ablation(model, datasets, settings, out_dir=out, dist=dist, restart=args.restart,
                             save_every=args.save_every, num_workers=args.workers, crop_batch=args.crop_batch,
                             progress=not args.no_progress, plots=not args.no_plots, sweeps=args.sweep,
                             grid=grid, log=log,
                             per_dataset=lambda m, d: with_preset_method_settings(m, args, d.spec),
                             refine_for=random_refiners if args.random_weights else None)
    finally:
        dist.close()
    if dist.is_main:
        md = ablation_markdown(table)
        results = md[md.index("## Results"):md.index("## Datasets and protocols")]
        print(results.rstrip() + f"\n\n-> {out}/ablation.json, {out}/ablation.md"
              + ("" if args.no_plots else f", {out}/plots/"))
    return 0


def _print_plan(settings, datasets, out: str, preset: str) -> None:
    print(f"{len(settings)} settings x {len(datasets)} datasets -> {out}")
    for s in settings:
        print(f"  {s.label:<40} {', '.join(s.sweeps):<24} runs/<dataset>/{s.slug}")
    from .eval_cmd import preset_settings_line

    for d in datasets:
        print(f"  dataset {d.spec.name}: {d.root} (preset {d.protocol.preset}, limit {d.limit or 'none'}; "
              f"method settings with the preset's method: {preset_settings_line(preset, d.spec.name)})")
