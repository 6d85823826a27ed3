"""Where masks come from: a SAM-family generator, published mask files, or a disk cache in front of a
generator. Every source is called as ``source(image, path=None) -> MaskSet`` with ``image`` an RGB uint8
array [H, W, 3] at the image's own size and ``path`` the file it was read from (needed by
:class:`FileMasks` only)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from .amg import AMGConfig, generate_masks
from .base import MaskError, MaskSet

MASK_SUFFIXES = (".npz", ".npy", ".png")


class MaskGenerator:
    """Automatic masks from a SAM / SAM 2 prompter (:func:`gemseg.masks.create_mask_source`)."""

    def __init__(self, prompter, config: AMGConfig | None = None):
        self.prompter = prompter
        self.config = config or AMGConfig()
        self.config.check_family(prompter.family)  # before any image, not at the first one

    def describe(self) -> dict:
        """What identifies these masks: the checkpoint and every generator setting (the cache key)."""
        return {"kind": "generator", "model": self.prompter.name, "source": self.prompter.source,
                "family": self.prompter.family, **self.config.to_dict()}

    def __call__(self, image: np.ndarray, path: str | None = None) -> MaskSet:
        found = generate_masks(self.prompter, image, self.config)
        if len(found) == 0:
            where = f"{path}: " if path else ""
            raise MaskError(f"{where}the mask generator found no masks; lower pred_iou_thresh / "
                             "stability_score_thresh or use more points_per_side")
        return found


class FileMasks:
    """Masks read from a folder of label maps, one per image, found by the image's file stem:
    ``<stem>.npz`` with an integer array ``instance_mask`` [H, W] (CorrCLIP's published region masks,
    read by corrclip_segmentor.py:280 ``np.load(...)['instance_mask']``; 0: not in any mask), or
    ``<stem>.npy`` / ``<stem>.png`` holding the same label map."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ValueError(f"mask folder {self.folder} does not exist; pass the folder of <image stem>.npz files")

    def describe(self) -> dict:
        return {"kind": "files", "folder": str(self.folder)}

    def find(self, path: str) -> Path:
        stem = Path(path).stem
        for suffix in MASK_SUFFIXES:
            candidate = self.folder / (stem + suffix)
            if candidate.is_file():
                return candidate
        raise MaskError(f"{path}: no mask file {stem}.npz (or .npy/.png) in {self.folder}; generate its masks "
                         "(--masks sam2-hiera-l) or add the file")

    def __call__(self, image: np.ndarray | None, path: str | None = None) -> MaskSet:
        if path is None:
            raise ValueError("masks read from files need the image's path; pass path= (or use a mask generator)")
        labels = read_label_map(self.find(path))
        if image is not None and tuple(labels.shape) != tuple(image.shape[:2]):
            raise MaskError(f"{path}: its mask file is {labels.shape[0]}x{labels.shape[1]} but the image is "
                             f"{image.shape[0]}x{image.shape[1]}; use the masks made for this image at its own size")
        found = MaskSet.from_label_map(labels)
        if len(found) == 0:
            raise MaskError(f"{path}: its mask file holds no masks (every value is 0); regenerate it")
        return found


def read_label_map(file: Path) -> torch.Tensor:
    """A label map [H, W] long from ``.npz`` (key ``instance_mask``), ``.npy`` or ``.png``."""
    try:
        if file.suffix == ".npz":
            with np.load(file) as data:
                if "instance_mask" not in data:
                    raise ValueError(f"{file} has no array 'instance_mask' (it has {', '.join(data.files)})")
                arr = data["instance_mask"]
        elif file.suffix == ".npy":
            arr = np.load(file, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(file) as im:
                arr = np.asarray(im)
    except (OSError, ValueError) as e:
        if isinstance(e, ValueError) and "instance_mask" in str(e):
            raise
        raise ValueError(f"{file} cannot be read as a label map ({type(e).__name__}: {e})") from e
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{file} must hold one integer label map [H, W], got {arr.dtype} {list(arr.shape)}")
    return torch.from_numpy(arr.astype(np.int64))


class CachedMasks:
    """A disk cache in front of a generator: one file per (image content, generator settings), so that a
    second evaluation, a sweep or a resumed run never generates the same masks twice."""

    def __init__(self, source, folder: str | os.PathLike):
        self.source = source
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        settings = json.dumps(source.describe(), sort_keys=True, default=str)
        self._settings = hashlib.sha256(settings.encode()).hexdigest()[:16]

    def describe(self) -> dict:
        return {**self.source.describe(), "cache": str(self.folder)}

    def key(self, image: np.ndarray) -> str:
        """``<content hash>-<settings hash>``: sha256 of the pixels and their shape, and of the settings."""
        h = hashlib.sha256(np.ascontiguousarray(image).tobytes())
        h.update(str(image.shape).encode())
        return f"{h.hexdigest()[:32]}-{self._settings}"

    def __call__(self, image: np.ndarray, path: str | None = None) -> MaskSet:
        file = self.folder / (self.key(image) + ".npz")
        if file.is_file():
            try:
                with np.load(file) as d:
                    H, W = (int(v) for v in d["size"])
                    bits = np.unpackbits(d["masks"], count=len(d["scores"]) * H * W)
                    masks = torch.from_numpy(bits.reshape(-1, H, W).astype(bool))
                    return MaskSet(masks, torch.from_numpy(d["scores"]))
            except (OSError, KeyError, ValueError):
                pass  # unreadable (e.g. a run killed while writing): generate again
        found = self.source(image, path)
        tmp = file.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, masks=np.packbits(found.masks.numpy().reshape(-1)),
                            scores=found.scores.float().numpy(), size=np.array(found.size))
        os.replace(tmp, file)
        return found


def label_maps(source, images, *, paths=None, size: tuple[int, int] | None = None) -> torch.Tensor:
    """The masks of a batch as label maps: ``images`` PIL images or RGB uint8 arrays [H, W, 3] (one size
    after ``size``), ``paths`` their files (for :class:`FileMasks`) -> [B, h, w] long, each image's
    :meth:`MaskSet.label_map` at its own size resized nearest to ``size`` (default: the first image's).
    Masks are made once per image, at the image's own resolution, as CorrCLIP does before it resizes them."""
    from .base import resize_label_map

    items = list(images)
    paths = list(paths) if paths is not None else [None] * len(items)
    if len(paths) != len(items):
        raise ValueError(f"got {len(paths)} paths for {len(items)} images")
    out = []
    for im, path in zip(items, paths):
        arr = np.asarray(im.convert("RGB")) if hasattr(im, "convert") else np.asarray(im)
        labels = source(np.ascontiguousarray(arr), path).label_map()
        target = tuple(size) if size is not None else (tuple(out[0].shape) if out else tuple(labels.shape))
        out.append(resize_label_map(labels, target))
    return torch.stack(out)
