"""A quick look at whether the Hugging Face hub can be reached, so that an offline first run does not
spend a minute in download retries. The command line (every command that builds a model) and the web
demo share it.

``python src/gemseg/hub.py`` (no imports beyond the standard library, so it runs before set-up)
exits 0 when the hub is reachable (or the check does not apply) and 1 after printing one line when
it is not.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
from urllib.parse import urlparse

PROBE_TIMEOUT = 3.0  # seconds for name lookup and one TCP connect: a reachable hub answers well within
OFFLINE_VALUES = ("1", "true", "yes", "on")  # what huggingface_hub itself accepts as HF_HUB_OFFLINE=on
_probed_unreachable: list[str] = []  # the host this process found unreachable (at most one entry)
_reached: set[tuple[str, int]] = set()  # addresses this process has reached: not probed again


def hub_address() -> tuple[str, int]:
    """``(host, port)`` of the hub: ``HF_ENDPOINT`` (default https://huggingface.co)."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def offline_mode() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is on for this process."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in OFFLINE_VALUES


def hub_reachable(timeout: float = PROBE_TIMEOUT) -> bool | None:
    """True/False: a TCP connection to the hub opened or not within ``timeout`` seconds, name lookup
    included (it runs in a helper thread, since ``getaddrinfo`` has no timeout of its own). None when
    the check does not apply: offline mode is already on, or a proxy is configured (a direct
    connection says nothing about the route through it)."""
    if offline_mode():
        return None
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    address = hub_address()
    if address in _reached:
        return True
    result: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection(address, timeout=timeout):
                result.append(True)
        except OSError:  # no DNS, no route, refused or timed out
            result.append(False)

    probe = threading.Thread(target=connect, name="gemseg-hub-probe", daemon=True)
    probe.start()
    probe.join(timeout)
    if result and result[0]:
        _reached.add(address)
        return True
    return False


def go_offline_if_unreachable(timeout: float = PROBE_TIMEOUT, stream=None, *, quiet: bool = False) -> bool:
    """Set ``HF_HUB_OFFLINE=1`` (cached files only, no retries) when the hub is unreachable and, unless
    ``quiet``, print one line saying so; returns whether it did. Call it before huggingface_hub is
    imported (it reads the variable once)."""
    if hub_reachable(timeout) is not False:
        return False
    os.environ["HF_HUB_OFFLINE"] = "1"
    host = hub_address()[0]
    _probed_unreachable[:] = [host]
    if not quiet:
        print(f"gemseg: {host} is unreachable; using cached weights only (HF_HUB_OFFLINE=1)",
              file=stream or sys.stderr, flush=True)
    return True


def offline_note() -> str:
    """Why only cached files were tried, for error messages: '' when online."""
    if _probed_unreachable and offline_mode():
        return f" ({_probed_unreachable[0]} is unreachable: offline mode, HF_HUB_OFFLINE=1, cached files only)"
    return " (offline mode is on: HF_HUB_OFFLINE=1)" if offline_mode() else ""


def cached_file(repo_id: str, filenames: list[str], cache_dir: str | None = None) -> str | None:
    """Path of the first of ``filenames`` in the hub cache for ``repo_id``, or None; never uses the network."""
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


def cached_open_clip_weights(cfg: dict, cache_dir: str | None = None) -> str | None:
    """Where the weights an open_clip pretrained config (``open_clip.get_pretrained_cfg``: ``file``,
    ``hf_hub``, ``url``) names are on disk, or None; never uses the network."""
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
        found = cached_file(repo_id.rstrip("/"), names, cache_dir)
        if found:
            return found
    url = cfg.get("url") or ""
    if url:
        path = os.path.join(cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(path):
            return path
    return None


if __name__ == "__main__":
    sys.exit(1 if go_offline_if_unreachable() else 0)
