"""Image loading for the evaluation loop: a DataLoader whose workers never outlive the process that
started them and whose errors keep their one-line reason.

- Each worker asks Linux to kill it when its parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``), so a
  SIGKILL of ``gemseg eval`` takes its workers with it at once; elsewhere (and as a second guard) a
  worker whose parent is already gone when it starts exits. PyTorch's own check of the parent only
  runs between items, every few seconds.
- A bad image or label raises in the worker; PyTorch would re-raise it in the parent as
  ``Caught ValueError in DataLoader worker process 1``. The worker instead hands back the error's type
  and message, and :func:`load_items` raises it again, the message unchanged.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from dataclasses import dataclass
from typing import Iterator, Sequence

from torch.utils.data import DataLoader, Dataset

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass(frozen=True)
class LoadError:
    """An input error raised while loading ``image_id`` (in a worker or not)."""

    image_id: str
    kind: str  # "missing" (FileNotFoundError) or "invalid" (any other ValueError/OSError)
    message: str

    def exception(self) -> Exception:
        return (FileNotFoundError if self.kind == "missing" else ValueError)(self.message)


class _Items(Dataset):
    def __init__(self, dataset, ids: Sequence[str]):
        self.dataset, self.ids = dataset, list(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        image_id = self.ids[i]
        try:
            return (image_id, *self.dataset.load(image_id))
        except (ValueError, OSError) as e:  # bad input; anything else is a bug and keeps its traceback
            text = str(e).strip() or type(e).__name__
            return LoadError(image_id, "missing" if isinstance(e, FileNotFoundError) else "invalid",
                             text.splitlines()[0])


def _identity(item):
    return item


def die_with_parent(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: end this worker when the process that started it ends."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if parent == 1 or os.getppid() != parent:  # the parent died before the request above took effect
        os._exit(1)


def load_items(dataset, ids: Sequence[str], *, num_workers: int = 0) -> Iterator[tuple]:
    """``(image_id, *dataset.load(image_id))`` for each id in order, loaded by ``num_workers`` worker
    processes (0: in this process). A load's ``ValueError``/``OSError`` is raised again here with its own
    one-line message. The workers are shut down when the iteration ends, however it ends."""
    loader = DataLoader(_Items(dataset, ids), batch_size=None, collate_fn=_identity, num_workers=num_workers,
                        worker_init_fn=die_with_parent if num_workers else None)
    it = iter(loader)
    try:
        for item in it:
            if isinstance(item, LoadError):
                raise item.exception()
            yield item
    finally:
        del it  # the iterator shuts its workers down when it goes away, also on an exception or a signal
