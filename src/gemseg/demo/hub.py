"""A quick look at whether the Hugging Face hub can be reached, so that an offline first run does not
spend a minute in download retries.

``python -m gemseg.demo.hub`` exits 0 when the hub is reachable (or the check does not apply) and 1
after printing one line when it is not.
"""
from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlparse

PROBE_TIMEOUT = 3.0  # seconds for one TCP connect: a reachable hub answers in well under a second


def hub_reachable(timeout: float = PROBE_TIMEOUT) -> bool | None:
    """True/False: a TCP connection to the hub (``HF_ENDPOINT``, default huggingface.co) opened or not
    within ``timeout`` seconds. None when the check does not apply: offline mode is already on, or a
    proxy is configured (a direct connection says nothing about the route through it)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return None
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:  # no DNS, no route, refused or timed out
        return False


def go_offline_if_unreachable(timeout: float = PROBE_TIMEOUT, stream=None) -> bool:
    """Set ``HF_HUB_OFFLINE=1`` (cached weights only, no retries) and print one line when the hub is
    unreachable; returns whether it did. Call it before huggingface_hub is imported."""
    if hub_reachable(timeout) is not False:
        return False
    os.environ["HF_HUB_OFFLINE"] = "1"
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname
    print(f"gemseg: {host} is unreachable; using cached weights only (HF_HUB_OFFLINE=1)",
          file=stream or sys.stderr, flush=True)
    return True


if __name__ == "__main__":
    sys.exit(1 if go_offline_if_unreachable() else 0)
