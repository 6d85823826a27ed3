"""``gemseg models``: the models and pretrained tags GEM can use, and which are already on this machine.

"Local" means the weights are in the Hugging Face hub cache (or open_clip's download folder for tags
that only have a URL); the check reads the cache and never touches the network.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ..hub import cached_file, cached_open_clip_weights

EXAMPLES = """\
examples:
  gemseg models                      # everything, local ones marked
  gemseg models vit-b-16 --local     # what can run offline now
  gemseg models --backend hf --json
  gemseg models --backend vfm        # the proxies of --method proxyclip/cass (--proxy NAME)
  gemseg models --methods            # the --method names, plug-in compositions (naclip+resclip) included
  gemseg models --backend masks      # the SAM / SAM 2 mask generators (--masks NAME)
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "models", help="list usable models and pretrained tags, and which are available locally",
        description="List the models and pretrained tags GEM can use from both backends (open_clip "
                    "class-token ViTs and Hugging Face CLIPModel checkpoints), marking those whose "
                    "weights are already in the local cache. Never uses the network.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("filter", nargs="?", default=None, metavar="TEXT",
                   help="only rows whose model or tag contains TEXT (case-insensitive)")
    p.add_argument("--backend", choices=("open_clip", "hf", "vfm", "masks"), default=None,
                   help="only this backend (vfm: the vision foundation models of --method proxyclip and cass; masks: "
                        "the SAM / SAM 2 mask generators of --masks)")
    p.add_argument("--local", action="store_true", help="only models whose weights are available locally")
    p.add_argument("--methods", action="store_true",
                   help="list the dense methods of --method instead (with <base>+<plug-in> compositions)")
    p.add_argument("--json", action="store_true", help="print JSON (one list of objects) instead of a table")
    p.add_argument("--cache-dir", default=None, help="hub cache folder to look in (default: the libraries' own)")
    p.set_defaults(func=main)


def open_clip_local_path(name: str, tag: str, cache_dir: str | None = None, cfg: dict | None = None) -> str | None:
    """Where the weights of open_clip ``name``/``tag`` are on disk, or None. ``cfg``: open_clip's
    pretrained config of the pair (read from open_clip when not given)."""
    if cfg is None:
        import open_clip

        cfg = open_clip.get_pretrained_cfg(name, tag) or {}
    return cached_open_clip_weights(cfg, cache_dir)


def _table_cache() -> str:
    """The file that keeps the lists of open_clip ViTs with their tags and of vision foundation models,
    so that a listing needs neither torch nor open_clip imported (seconds on a small machine). Its name
    changes with the open_clip version and with the code that draws up the lists."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__
    from .. import backbones

    try:
        open_clip_version = version("open_clip_torch")
    except PackageNotFoundError:
        open_clip_version = "none"
    here = os.path.dirname(backbones.__file__)
    stats = [os.stat(os.path.join(here, f)) for f in ("__init__.py", "open_clip.py", "vfm.py", "sam.py")]
    stats += [os.stat(os.path.join(os.path.dirname(here), "masks", f)) for f in sorted(os.listdir(
        os.path.join(os.path.dirname(here), "masks"))) if f.endswith(".py")]  # the SAM registry (backbones/sam.py) and the mask generators
    key = hashlib.sha1(repr([(st.st_size, st.st_mtime_ns) for st in stats]).encode()).hexdigest()[:12]
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "gemseg", f"models-{__version__}-open_clip-{open_clip_version}-{key}.json")


def open_clip_table() -> list[dict]:
    """``[{"model", "pretrained", "cfg"}]`` of every open_clip class-token ViT and tag of the installed
    open_clip (cfg: the ``file``, ``hf_hub`` and ``url`` open_clip loads it from); empty without it."""
    from ..backbones import list_models

    entries = list_models("open_clip")  # empty without open_clip_torch
    if not entries:
        return []
    import open_clip

    rows = []
    for e in entries:
        cfg = open_clip.get_pretrained_cfg(e.name, e.pretrained) or {}
        rows.append({"model": e.name, "pretrained": e.pretrained, "cfg": {
            k: v for k, v in cfg.items() if k in ("file", "hf_hub", "url") and isinstance(v, str)}})
    return rows


def _draw_up_tables() -> dict:
    from ..backbones.vfm import list_vfms

    from ..masks import list_mask_models

    return {"open_clip": open_clip_table(),
            "vfm": [{"model": e.name, "pretrained": e.timm_name, "kind": e.kind} for e in list_vfms()],
            "masks": [{"model": e.name, "pretrained": e.hub_id, "kind": e.family} for e in list_mask_models()]}


def cached_tables() -> dict | None:
    """The tables of :func:`tables` when a listing has already written them to its cache file, else None
    (nothing is imported or drawn up)."""
    try:
        with open(_table_cache(), encoding="utf-8") as f:
            table = json.load(f)
    except (OSError, ValueError):
        return None
    return table if isinstance(table, dict) else None


def tables() -> dict:
    """``{"open_clip": [{"model", "pretrained", "cfg"}], "vfm": [{"model", "pretrained", "kind"}]}``:
    every open_clip class-token ViT and tag (cfg: the file, hf_hub and url open_clip loads it from) and
    every vision foundation model, from the cache file when there is one."""
    path = _table_cache()
    table = cached_tables()
    if table is not None:
        return table
    table = _draw_up_tables()
    try:  # best effort: without a writable cache the next listing is slow again, nothing more
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(table, f)
        os.replace(path + ".tmp", path)
    except OSError:
        pass
    return table


def hf_local_path(repo_id: str, cache_dir: str | None = None) -> str | None:
    """Where a Hugging Face CLIPModel's weights are in the hub cache, or None."""
    return cached_file(repo_id, ["model.safetensors", "pytorch_model.bin", "model.safetensors.index.json"],
                     cache_dir)


def mask_rows(cache_dir: str | None = None) -> list[dict]:
    """The SAM / SAM 2 mask generators (``--masks NAME``), with their weights' place in the hub cache
    (the list itself from the cache file of :func:`tables`)."""
    return [{"backend": "masks", **r, "local": (path := hf_local_path(r["pretrained"], cache_dir)) is not None,
             "path": path} for r in tables().get("masks", [])]


def rows(backend: str | None = None, cache_dir: str | None = None) -> list[dict]:
    from ..backbones import BACKENDS

    out = []
    table = tables() if backend in (None, "open_clip", "vfm") else {}
    if backend in (None, "open_clip"):
        for r in table["open_clip"]:
            path = open_clip_local_path(r["model"], r["pretrained"], cache_dir, cfg=r["cfg"])
            out.append({"backend": "open_clip", "model": r["model"], "pretrained": r["pretrained"],
                        "local": path is not None, "path": path})
    for kind, spec in BACKENDS.items():  # the Hugging Face families: their known ids are data
        if kind != "open_clip" and backend in (None, kind) and not isinstance(spec.models, str):
            for name in spec.models:
                path = hf_local_path(name, cache_dir)
                out.append({"backend": kind, "model": name, "pretrained": None, "local": path is not None,
                            "path": path})
    if backend in (None, "vfm"):  # the proxies of --method proxyclip, their timm weights in the hub cache
        names = ["model.safetensors", "pytorch_model.bin"]
        out += [{"backend": "vfm", **r, "local": (path := cached_file("timm/" + r["pretrained"], names, cache_dir))
                 is not None, "path": path} for r in table["vfm"]]
    return out + (mask_rows(cache_dir) if backend in (None, "masks") else [])


def method_rows() -> list[dict]:
    """Every --method name with the first line of its function's docstring, its own settings type and its
    proxy's (the --method-setting names)."""
    from ..methods import SUMMARIES, get_method, list_methods

    out = []
    for name in list_methods():
        m = get_method(name)
        base, _, plugin = name.rpartition("+")
        doc = (getattr(m.fn, "__doc__", None) or "").strip().splitlines()
        summary = (f"{base} {SUMMARIES[plugin]}" if plugin in SUMMARIES and base else
                   SUMMARIES.get(name) or (doc[0] if doc else ""))
        kind, proxy = getattr(m, "settings_type", None), getattr(m, "proxy_settings_type", None)
        out.append({"method": name, "summary": summary, "settings": kind.__name__ if kind else None,
                    "proxy_settings": proxy.__name__ if proxy else None})
    return out


def _print_methods(as_json: bool) -> int:
    table = method_rows()
    if as_json:
        json.dump(table, sys.stdout, indent=2)
        print()
        return 0
    width = max(len(r["method"]) for r in table)
    for r in table:
        kinds = [k for k in (r["settings"], r["proxy_settings"] and f"{r['proxy_settings']} (proxy)") if k]
        extra = f"  [--method-setting: {', '.join(kinds)}]" if kinds else ""
        print(f"{r['method'].ljust(width)}  {r['summary']}{extra}")
    return 0


def main(args: argparse.Namespace) -> int:
    if args.methods:
        return _print_methods(args.json)
    table = rows(args.backend, args.cache_dir)
    if args.filter:
        needle = args.filter.lower().replace("/", "-")  # ViT-B/16 is open_clip's ViT-B-16
        table = [r for r in table if needle in f"{r['model']} {r['pretrained'] or ''}".lower().replace("/", "-")]
    if args.local:
        table = [r for r in table if r["local"]]
    if args.json:
        json.dump(table, sys.stdout, indent=2)
        print()
        return 0 if table or not (args.filter or args.local) else 1
    if not table:
        print("no models match" + (" (none is available locally)" if args.local else ""), file=sys.stderr)
        return 1 if args.filter or args.local else 0
    head = ("BACKEND", "MODEL", "PRETRAINED", "LOCAL")
    cells = [(r["backend"], r["model"], r["pretrained"] or "-", "yes" if r["local"] else "-") for r in table]
    widths = [max(len(c[i]) for c in cells + [head]) for i in range(4)]
    clip = [c for c in cells if c[0] not in ("vfm", "masks")]
    groups = [("vfm", "Vision foundation models without text (--method proxyclip --proxy MODEL; PRETRAINED is timm's):"),
              ("masks", "Mask generators (--masks MODEL; the sam-vit-* rows are also Trident's SAM, "
                        "--proxy-settings sam=MODEL; PRETRAINED is the Hugging Face id):")]
    for c in [head] + clip:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip())
    for kind, title in groups:  # each in its own group
        group = [c for c in cells if c[0] == kind]
        if group:
            if clip or kind != groups[0][0]:
                print()
            print(title)
            for c in group:
                print("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip())
    local = sum(r["local"] for r in table)
    print(f"\n{len(table)} model(s), {local} available locally. Use open_clip rows as "
          "--model MODEL --pretrained PRETRAINED, Hugging Face rows as --model MODEL, vfm rows as --proxy MODEL, "
          "masks rows as --masks MODEL.\n"
          "Weights that are not local are downloaded on first use when online; offline, put them in the "
          "hub cache (HF_HOME) or pass --checkpoint PATH / a local model folder.", file=sys.stderr)
    return 0
