"""``gemseg score``: score saved label maps of any method against a dataset's ground truth."""
from __future__ import annotations

import argparse
import json

EXAMPLES = """\
examples:
  gemseg score --pred runs/voc21/preds --gt data/VOCdevkit/VOC2012/SegmentationClass --dataset voc21
  gemseg score --pred preds/ --gt data/ADEChallengeData2016/annotations/validation --dataset ade20k --json ade.json
  gemseg score --pred preds/ --gt labels/ --num-classes 5 --ignore-index 255

Predictions are PNGs named <id>.png (folders allowed) whose pixel values are class indices, as
`gemseg eval --save-preds` writes them. The ground truth of <id> is <gt>/<id><suffix>, with the suffix
and label decoding of --dataset (e.g. ADE20K's 0 is ignored and 1..150 become 0..149).
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "score", help="mIoU of saved label maps against ground truth",
        description="Score saved predictions of any method: one confusion matrix over all images, then "
                    "mIoU, per-class IoU and accuracy, pixel accuracy (docs/evaluation.md).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred", required=True, metavar="DIR", help="folder of predicted label PNGs")
    p.add_argument("--gt", required=True, metavar="DIR", help="folder of ground-truth label maps")
    p.add_argument("--dataset", help="built-in dataset name or metadata .json: classes and label decoding")
    p.add_argument("--num-classes", type=int, help="without --dataset: number of classes")
    p.add_argument("--ignore-index", type=int, default=255, help="without --dataset: unscored label value")
    p.add_argument("--gt-suffix", default=".png", help="without --dataset: ground-truth file ending")
    p.add_argument("--split", metavar="FILE", help="score exactly the ids listed in FILE (default: every prediction)")
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..eval import load_dataset_spec, result_markdown
    from ..eval.score import adhoc_spec, score_folders

    if args.dataset:
        spec = load_dataset_spec(args.dataset)
        if spec.type != "dense":
            raise ValueError(f"{spec.name} has point labels; `gemseg score` scores label maps")
    elif args.num_classes:
        spec = adhoc_spec(args.num_classes, ignore_index=args.ignore_index, gt_suffix=args.gt_suffix)
    else:
        raise ValueError("give --dataset, or --num-classes for label maps that already hold class indices")
    ids = None
    if args.split:
        from pathlib import Path

        from ..eval.datasets import read_split

        ids = read_split(Path(args.split))  # ids checked, a repeated id counted once (with a warning)
    result = score_folders(args.pred, args.gt, spec, ids=ids)
    print(result_markdown(result), end="")
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
        except OSError as e:
            raise ValueError(f"cannot write --json {args.json}: {e.strerror or e}") from e
    return 0
