"""Options shared by every command that runs a model, and the model built from them."""
from __future__ import annotations

import argparse
import dataclasses
import os

from ..errors import WeightsUnavailableError


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
    from ..names import method_names  # the registry's names without importing it (torch)

    g.add_argument("--method", default="gem", choices=method_names(),
                   help="training-free dense method (default: %(default)s); see docs/methods.md")
    g.add_argument("--method-setting", "--proxy-settings", dest="method_setting", action="append", default=[],
                   metavar="NAME=VALUE[,...]",
                   help="a setting of the method's own (sc-clip, sfp, <base>+resclip) or of its proxy (proxyclip, "
                        "cass, trident, corrclip: ProxyCLIPConfig, CASSConfig, ... fields), one namespace; repeat "
                        "or comma-separate, e.g. use_sfr=off,rcs_weights=2.0,0.3 or global_semantics_weight=0.1 "
                        "(--proxy-settings is an alias; gemseg eval/ablate: the preset's for the dataset come "
                        "first, these win); `gemseg models --methods` and docs/methods.md list them")
    g.add_argument("--proxy", default=None, metavar="VFM",
                   help="--method proxyclip, cass, corrclip or trident: vision foundation model (default: dino-b8; "
                        "trident: dino-b16, and it also loads SAM ViT-B, facebook/sam-vit-base); "
                        "`gemseg models --backend vfm` lists them")
    g.add_argument("--proxy-weights", default="pretrained", metavar="WEIGHTS",
                   help="the proxy's weights: pretrained (hub cache), random (trident: SAM too), or a checkpoint file "
                        "(default: %(default)s)")
    add_mask_args(g)
    add_gem_args(parser.add_argument_group("GEM"))


SETTING_FLAG = "--method-setting"  # the flag (alias --proxy-settings) whose items settings_kwargs resolves


def settings_kwargs(method: str, items) -> dict:
    """``create_model``'s ``method_settings`` (a dict) and ``proxy_settings`` (the method's
    ``proxy_settings_type``) from ``--method-setting`` items, one namespace over both (later items win);
    each keyword only when an item names one of its fields."""
    from ..methods import get_method
    from ..methods.settings import resolve_settings

    m = get_method(method)
    own, proxy = resolve_settings(m, items or [], label=SETTING_FLAG)
    return {**({"method_settings": own} if own else {}),
            **({"proxy_settings": m.proxy_settings_type(**proxy)} if proxy else {})}


def proxy_settings(method: str, text: str | None):
    """``--proxy-settings`` text (``K=V,...``) -> ``method``'s proxy settings dataclass, or ``None`` without
    text; the proxy part of :func:`settings_kwargs` (a name of the method's own settings is refused)."""
    from ..methods import get_method
    from ..methods.settings import resolve_settings

    if text is None:
        return None
    m = get_method(method)
    if getattr(m, "proxy_settings_type", None) is None:
        raise ValueError(f"--proxy-settings: method {method!r} has no proxy settings")
    own, proxy = resolve_settings(m, [text], label="--proxy-settings")
    if own:
        raise ValueError(f"--proxy-settings: {', '.join(own)} {'is' if len(own) == 1 else 'are'} {method}'s own "
                         "setting(s), not its proxy's")
    return m.proxy_settings_type(**proxy)


def add_refine_arg(group) -> None:
    """--refine NAME (repeatable): refiners run on the scores before labelling (gemseg.refiners)."""
    from ..names import REFINERS  # the registry's names without importing it (torch)

    group.add_argument("--refine", action="append", default=None, choices=REFINERS, metavar="NAME",
                       help="refine the scores before labelling; repeatable, run in the order given "
                            f"(registered: {', '.join(REFINERS)}; pamr: 10 steps, dilations 8,16; lposs, lposs+: "
                            "LPOSS label propagation with DINO ViT-B/16; sam-prompts: Trident's SAM-prompt "
                            "refinement, with --method trident's SAM; masks: CorrCLIP's map correction, with "
                            "--masks; docs/methods.md)")


def add_mask_args(group) -> None:
    """--masks SOURCE and --mask-cache DIR: class-agnostic masks (gemseg.masks) for --method corrclip and
    --refine masks."""
    group.add_argument("--masks", default=None, metavar="SOURCE",
                       help="class-agnostic masks for --method corrclip (default: its own generator, "
                            "sam2-hiera-l) and --refine masks: a SAM / SAM 2 "
                            "generator (sam-vit-b, sam2-hiera-l, ...; `gemseg models --backend masks`), a hub id "
                            "or model folder (random with --random-weights: a folder's config, or the family's "
                            "default config), or files:FOLDER of <image stem>.npz label maps")
    group.add_argument("--mask-cache", default=None, metavar="DIR",
                       help="keep generated masks in DIR by image content and generator settings, so that "
                            "no image's masks are generated twice")
    group.add_argument("--mask-setting", action="append", default=[], metavar="NAME=VALUE[,...]",
                       help="a setting of the --masks generator (gemseg.masks.AMGConfig fields: points_per_side, "
                            "pred_iou_thresh, stability_score_thresh, box_nms_thresh, crop_n_layers, "
                            "multimask_output, min_mask_region_area, ...); repeat or comma-separate. The rest are "
                            "CorrCLIP's run-time generator's (8 x 8 points, thresholds 0.4, one mask per point)")


def mask_kwargs(args: argparse.Namespace) -> dict:
    """create_model's mask arguments from --masks / --mask-cache / --mask-setting."""
    masks, cache = getattr(args, "masks", None), getattr(args, "mask_cache", None)
    items = getattr(args, "mask_setting", None) or []
    if masks is None:  # the method's own generator where it names one (corrclip: SAM 2 Hiera-L), as for --proxy
        from ..methods import get_method

        masks = getattr(get_method(getattr(args, "method", "gem")), "default_masks", None)
    if masks is None:
        for flag, given in (("--mask-cache", cache is not None), ("--mask-setting", bool(items))):
            if given:
                raise ValueError(f"{flag} needs --masks SOURCE (a SAM / SAM 2 generator)")
        wants = _wants_masks(args)
        if wants:  # said now, not once per image after the model is built
            raise ValueError(f"{wants} needs class-agnostic masks: add --masks SOURCE (a SAM / SAM 2 generator "
                             "such as sam2-hiera-l, `gemseg models --backend masks`, or files:FOLDER)")
        return {}
    if items:
        from ..masks import AMGConfig
        from ..methods.settings import settings_from_text

        settings = {"mask_settings": settings_from_text(AMGConfig, items, label="--mask-setting")}
    else:
        settings = {}
    return {"masks": masks, **({"mask_cache": cache} if cache is not None else {}), **settings,
            **({"mask_weights": "random"} if getattr(args, "random_weights", False) else {})}


def refine_arg(args: argparse.Namespace) -> list | None:
    """The Segmenter's ``refine=`` from --refine: the names, each made :func:`random_refiners` with
    --random-weights."""
    names = getattr(args, "refine", None)
    return random_refiners(names) if names and getattr(args, "random_weights", False) else names


def random_refiners(refine) -> list:
    """``refine`` (refiner names and ``(name, {settings})`` pairs: --refine, a preset's protocol, an ablation's
    grid) with random weights for each refiner that loads a model of its own (lposs, lposs+: DINO ViT-B/16):
    ``(name, {..., "weights": "random"})``, as --random-weights gives the proxy. Others pass unchanged."""
    from ..lposs import LPOSSRefiner
    from ..refiners import get_refiner

    out: list = []
    for item in ([refine] if isinstance(refine, str) or _is_pair(refine) else list(refine)):
        name, settings = (item, {}) if isinstance(item, str) else item
        fn = get_refiner(name)
        own = isinstance(fn, LPOSSRefiner) and fn.vfm is None
        out.append((name, {**settings, "weights": "random"}) if own else item)
    return out


def with_random_refiners(protocol, args: argparse.Namespace):
    """``protocol`` (a preset's, gemseg.eval.Protocol) with its own refiners made :func:`random_refiners`
    under --random-weights (the lposs presets' DINO), else unchanged."""
    if not getattr(args, "random_weights", False) or not protocol.refine:
        return protocol
    return dataclasses.replace(protocol, refine=tuple(random_refiners(protocol.refine)))


def _is_pair(item) -> bool:
    """Whether ``item`` is one ``(name, {settings})`` refiner rather than a sequence of them."""
    return isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], dict)


def _proxy_methods() -> list[str]:
    """The registered methods that take --proxy, as each declares it (Method.needs)."""
    from ..methods import list_methods

    return [m for m in list_methods() if needs_proxy(m)]


def _check_sam_refiners(args: argparse.Namespace) -> None:
    """Refuse, before the model is built, a --refine that uses the SAM of a method not given (sam-prompts
    without --method trident: the refiner declares ``sam_methods``)."""
    from ..refiners import get_refiner

    method = getattr(args, "method", "gem")
    for name in getattr(args, "refine", None) or ():
        methods = getattr(get_refiner(name), "sam_methods", None)
        if methods and method not in methods:
            raise ValueError(f"--refine {name} uses the SAM that --method {' or '.join(methods)} loads, and --method "
                             f"{method} has none: add --method {methods[0]} (or drop --refine {name})")


def _wants_masks(args: argparse.Namespace) -> str | None:
    """The option that needs masks (--method corrclip, --refine masks), as the method or refiner declares it."""
    from ..methods import get_method
    from ..refiners import get_refiner

    method = getattr(args, "method", "gem")
    if "masks" in get_method(method).needs:
        return f"--method {method}"
    for name in getattr(args, "refine", None) or ():
        if getattr(get_refiner(name), "needs_masks", False):
            return f"--refine {name}"
    return None


def _gem_options():
    """``(field, flag, dest)`` of each :class:`~gemseg.GEMConfig` field, flags from the fields' metadata."""
    from ..config import GEMConfig

    for f in dataclasses.fields(GEMConfig):
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        yield f, flag, flag[2:].replace("-", "_")


def add_gem_args(group) -> None:
    """One option per GEMConfig field, its help and default read from the field: booleans become a
    flag that turns the setting away from its default, tuples a comma-separated list."""
    for f, flag, _ in _gem_options():
        text = f.metadata["help"]
        if isinstance(f.default, bool):
            group.add_argument(flag, action="store_true", help=text)
            continue
        shown = f.metadata.get("shown") or f.default
        if isinstance(f.default, tuple):
            group.add_argument(flag, default=",".join(f.default), help=f"{text} (default: {shown})")
        else:  # a number, or None meaning "not fixed" (the annotation names the type)
            kind = {"int": int, "float": float}[str(f.type).split("|")[0].strip()]
            group.add_argument(flag, type=kind, default=f.default, help=f"{text} (default: {shown})")


def gem_kwargs(args: argparse.Namespace) -> dict:
    """The GEMConfig fields (keywords of :func:`gemseg.create_model`) that the GEM options ask for."""
    out = {}
    for f, _, dest in _gem_options():
        value = getattr(args, dest)
        if isinstance(f.default, bool):
            value = (not f.default) if value else f.default
        elif isinstance(f.default, tuple):
            value = tuple(p.strip() for p in value.split(",") if p.strip())
        out[f.name] = value
    return out


def model_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`gemseg.create_model` that ``args`` ask for. With no weights
    option the library's choice applies (:func:`gemseg.backbones.default_pretrained`)."""
    from ..backbones import default_pretrained

    _check_sam_refiners(args)  # said now, not once per image after the model is built
    pretrained = args.pretrained
    if pretrained is None and args.checkpoint is None and not args.random_weights:
        pretrained = default_pretrained(args.model, args.backend)
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return dict(pretrained=pretrained, checkpoint=args.checkpoint, backend=args.backend, device=device,
                precision=args.precision, cache_dir=args.cache_dir, method=args.method, **gem_kwargs(args),
                **settings_kwargs(args.method, getattr(args, "method_setting", None)),
                **({} if not needs_proxy(args.method) else dict(
                    proxy=args.proxy, proxy_weights="random" if args.random_weights else args.proxy_weights)),
                **mask_kwargs(args))


def needs_proxy(method: str) -> bool:
    """Whether ``method`` takes a proxy vision model (``--proxy``), as the method declares it."""
    from ..names import method_needs

    needs = method_needs(method)
    if needs is None:  # not a built-in name: ask the registry
        from ..methods import get_method

        needs = get_method(method).needs
    return "proxy" in needs


def method_settings_kwargs(args: argparse.Namespace) -> dict:
    """``{"method_settings": {...}}`` from the method's own names among --method-setting, or nothing."""
    own = settings_kwargs(args.method, getattr(args, "method_setting", None)).get("method_settings")
    return {"method_settings": own} if own else {}


def needs_hub(args: argparse.Namespace) -> bool:
    """Whether building the model ``args`` describe may ask the model hub for files: not for a local
    config with a checkpoint or random weights, nor for a local model folder."""
    proxy = needs_proxy(getattr(args, "method", "gem")) and getattr(args, "proxy_weights", "") == "pretrained" \
        and not args.random_weights  # the proxy's timm weights come from the hub too
    if os.path.isdir(args.model):
        return proxy
    local = args.model.endswith(".json") and (args.checkpoint or args.random_weights)
    return not local or proxy


def prepare_hub(args: argparse.Namespace) -> None:
    """Turn on offline mode (cached files only) when the model hub is needed and cannot be reached;
    quiet, since a weights error then says so and cached weights still load. Call it before
    huggingface_hub is imported: it reads HF_HUB_OFFLINE once."""
    from ..hub import go_offline_if_unreachable

    if needs_hub(args):
        go_offline_if_unreachable(quiet=True)


# how to supply what is missing, in command-line terms (the library's message names Python arguments)
_CLI_HOW_TO = {
    ("openclip", "weights"): ("put them in the hub cache (HF_HOME, or --cache-dir DIR; `gemseg models --local` "
                              "lists what is there), pass --checkpoint PATH, or run with --random-weights "
                              "for a demo"),
    ("hf", "weights"): ("put the model in the hub cache (HF_HOME, or --cache-dir DIR) or pass --model FOLDER "
                        "saved with save_pretrained()"),
    ("hf", "config"): ("put the model in the hub cache (HF_HOME, or --cache-dir DIR) or pass --model FOLDER "
                       "saved with save_pretrained(); --random-weights needs the config too"),
}


def cli_weights_error(e: WeightsUnavailableError) -> WeightsUnavailableError:
    """``e`` worded for the command line (flags, not Python arguments), or ``e`` itself when it has no
    wording of its own here."""
    how = _CLI_HOW_TO.get((e.backend, e.missing))
    if how is None or e.model is None:
        return e
    if str(e.model).startswith("SAM model "):  # gemseg.backbones.sam names them so: --masks or Trident's sam
        how = how.replace("--model FOLDER", "--masks FOLDER (a mask generator) or --method-setting sam=FOLDER "
                                            "(Trident's SAM)")
    from ..hub import offline_note

    noun, pronoun = ("the model config", "it") if e.missing == "config" else ("weights", "them")
    return WeightsUnavailableError(f"cannot load {noun} for {e.model}{offline_note()}: {e.reason}. "
                                   f"To supply {pronoun}, {how}.", model=e.model, missing=e.missing,
                                   backend=e.backend, reason=e.reason)


def build_model(args: argparse.Namespace):
    """Create the model ``args`` describe (random weights quietly when --random-weights, seeded with 0).
    When the model hub may be asked for files and cannot be reached (a 3-second probe), only cached
    files are tried: the command fails in seconds, not after a minute of download retries."""
    import warnings

    import torch

    from .. import create_model

    if args.device and args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available here; use --device cpu")
    prepare_hub(args)
    if args.random_weights:
        torch.manual_seed(0)  # the same random model on every run and command: demos and tests repeat
    with warnings.catch_warnings():
        if args.random_weights:
            warnings.filterwarnings("ignore", message=".*random weights.*")
        if getattr(args, "proxy", None) is not None and not needs_proxy(args.method):
            warnings.warn(f"--proxy is only used by methods that need a proxy ({', '.join(_proxy_methods())}); "
                          f"ignored for {args.method}")
        try:
            return create_model(args.model, **model_kwargs(args))
        except WeightsUnavailableError as e:
            raise cli_weights_error(e) from e
