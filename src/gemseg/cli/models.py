"""``gemseg models``: the models and pretrained tags GEM can use, and which are already on this machine.

"Local" means the weights are in the Hugging Face hub cache (or open_clip's download folder for tags
that only have a URL); the check reads the cache and never touches the network.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

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


def _hub_file(repo_id: str, filenames: list[str], cache_dir: str | None) -> str | None:
    """Path of the first of ``filenames`` cached for ``repo_id``, or None; offline by construction."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in filenames:
        try:
            found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
        except Exception:  # malformed ids are simply not cached
            found = None
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def open_clip_local_path(name: str, tag: str, cache_dir: str | None = None) -> str | None:
    """Where the weights of open_clip ``name``/``tag`` are on disk, or None."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag) or {}
    if cfg.get("file") and os.path.isfile(cfg["file"]):
        return cfg["file"]
    hub = cfg.get("hf_hub") or ""
    if hub:
        repo_id, filename = os.path.split(hub)
        if filename:
            names = [filename] + ([filename.rsplit(".", 1)[0] + ".safetensors"]
                                  if filename.endswith((".bin", ".pth")) else [])
        else:
            names = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        found = _hub_file(repo_id, names, cache_dir)
        if found:
            return found
    url = cfg.get("url") or ""
    if url:
        path = os.path.join(cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(path):
            return path
    return None


def hf_local_path(repo_id: str, cache_dir: str | None = None) -> str | None:
    """Where a Hugging Face CLIPModel's weights are in the hub cache, or None."""
    return _hub_file(repo_id, ["model.safetensors", "pytorch_model.bin", "model.safetensors.index.json"],
                     cache_dir)


def vfm_rows(cache_dir: str | None = None) -> list[dict]:
    """The vision foundation models (``--proxy NAME``), with their timm weights' place in the hub cache."""
    from ..backbones.vfm import list_vfms

    names = ["model.safetensors", "pytorch_model.bin"]
    return [{"backend": "vfm", "model": e.name, "pretrained": e.timm_name, "kind": e.kind,
             "local": (path := _hub_file("timm/" + e.timm_name, names, cache_dir)) is not None, "path": path}
            for e in list_vfms()]


def mask_rows(cache_dir: str | None = None) -> list[dict]:
    """The SAM / SAM 2 mask generators (``--masks NAME``), with their weights' place in the hub cache."""
    from ..masks import list_mask_models

    return [{"backend": "masks", "model": e.name, "pretrained": e.hub_id, "kind": e.family,
             "local": (path := hf_local_path(e.hub_id, cache_dir)) is not None, "path": path}
            for e in list_mask_models()]


def rows(backend: str | None = None, cache_dir: str | None = None) -> list[dict]:
    from ..backbones import list_models

    out = []
    for entry in list_models(backend) if backend not in ("vfm", "masks") else []:
        if entry.backend == "open_clip":
            path = open_clip_local_path(entry.name, entry.pretrained, cache_dir)
        elif entry.backend == "hf":
            path = hf_local_path(entry.name, cache_dir)
        else:  # registered in code: its factory decides where weights come from
            path = None
        out.append({"backend": entry.backend, "model": entry.name, "pretrained": entry.pretrained,
                    "local": path is not None, "path": path})
    return (out + (vfm_rows(cache_dir) if backend in (None, "vfm") else [])
            + (mask_rows(cache_dir) if backend in (None, "masks") else []))


def method_rows() -> list[dict]:
    """Every --method name with the first line of its function's docstring and its own settings type."""
    from ..methods import SUMMARIES, get_method, list_methods

    out = []
    for name in list_methods():
        m = get_method(name)
        base, _, plugin = name.rpartition("+")
        doc = (getattr(m.fn, "__doc__", None) or "").strip().splitlines()
        summary = (f"{base} {SUMMARIES[plugin]}" if plugin in SUMMARIES and base else
                   SUMMARIES.get(name) or (doc[0] if doc else ""))
        kind = getattr(m, "settings_type", None)
        out.append({"method": name, "summary": summary, "settings": kind.__name__ if kind else None})
    return out


def _print_methods(as_json: bool) -> int:
    table = method_rows()
    if as_json:
        json.dump(table, sys.stdout, indent=2)
        print()
        return 0
    width = max(len(r["method"]) for r in table)
    for r in table:
        extra = f"  [--method-setting: {r['settings']}]" if r["settings"] else ""
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
              ("masks", "Mask generators (--masks MODEL; PRETRAINED is the Hugging Face id):")]
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
