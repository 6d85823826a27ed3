"""Options shared by every command that runs a model, and the model built from them."""
from __future__ import annotations

import argparse


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Add --model/--pretrained/--checkpoint/--backend/--device/--precision and the GEM knobs."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", default="ViT-B/16",
                   help="open_clip name (ViT-B/16), open_clip config .json, Hugging Face CLIPModel id or "
                        "folder (default: %(default)s); `gemseg models` lists them")
    g.add_argument("--pretrained", default=None,
                   help="open_clip pretrained tag (default: openai for open_clip names)")
    g.add_argument("--checkpoint", default=None, help="local open_clip weights (.pt/.bin/.safetensors)")
    g.add_argument("--random-weights", action="store_true",
                   help="use random weights (for tests and demos without downloads)")
    from ..backbones import BACKENDS

    g.add_argument("--backend", default="auto", choices=("auto", *BACKENDS))
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    g.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    g.add_argument("--cache-dir", default=None, help="hub cache folder (default: the libraries' own)")
    from ..methods import list_methods

    g.add_argument("--method", default="gem", choices=list_methods(),
                   help="training-free dense method (default: %(default)s); see docs/methods.md")
    g.add_argument("--proxy", default=None, metavar="VFM",
                   help="--method proxyclip: vision foundation model (default: dino-b8); "
                        "`gemseg models --backend vfm` lists them")
    g.add_argument("--proxy-weights", default="pretrained", metavar="WEIGHTS",
                   help="the proxy's weights: pretrained (hub cache), random, or a checkpoint file "
                        "(default: %(default)s)")
    k = parser.add_argument_group("GEM")
    k.add_argument("--depth", type=int, default=7, help="last depth-1 blocks get the GEM path (default: 7)")
    k.add_argument("--iterations", type=int, default=1, help="self-self attention iterations (default: 1)")
    k.add_argument("--temperature", type=float, default=None,
                   help="fixed inverse temperature (default: adaptive)")
    k.add_argument("--projections", default="v,k,q", help="self-self projections to ensemble (default: v,k,q)")
    k.add_argument("--no-l2", action="store_true", help="ablation: no L2 normalization in self-self attention")
    k.add_argument("--gem-mlp", action="store_true", help="ablation: apply the MLP on the GEM path")


def model_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`gemseg.create_model` that ``args`` ask for."""
    from ..backbones import resolve_backend

    pretrained = args.pretrained
    backend = resolve_backend(args.model, args.backend)
    if (pretrained is None and args.checkpoint is None and not args.random_weights
            and backend == "open_clip" and not args.model.endswith(".json")):
        pretrained = "openai"
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return dict(pretrained=pretrained, checkpoint=args.checkpoint, backend=args.backend, device=device,
                precision=args.precision, cache_dir=args.cache_dir, depth=args.depth,
                iterations=args.iterations, temperature=args.temperature,
                projections=tuple(p.strip() for p in args.projections.split(",") if p.strip()),
                l2_normalize=not args.no_l2, gem_mlp=args.gem_mlp, method=args.method,
                **({} if args.method != "proxyclip" else dict(
                    proxy=args.proxy, proxy_weights="random" if args.random_weights else args.proxy_weights)))


def build_model(args: argparse.Namespace):
    """Create the model ``args`` describe (random weights quietly when --random-weights)."""
    import warnings

    from .. import create_model

    with warnings.catch_warnings():
        if args.random_weights:
            warnings.filterwarnings("ignore", message=".*random weights.*")
        if getattr(args, "proxy", None) is not None and args.method != "proxyclip":
            warnings.warn(f"--proxy is only used with --method proxyclip; ignored for {args.method}")
        return create_model(args.model, **model_kwargs(args))
