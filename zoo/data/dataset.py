"""Detection / segmentation datasets on top of a source, batching, and reproducible loading.

Reproducibility: :class:`SeededSampler` yields ``(index, sample_seed)`` pairs where the seed is a
function of (run seed, epoch, index). Datasets draw every augmentation from that seed, so a batch
is the same whichever worker builds it, and a resumed run sees exactly the data it would have
seen. With ``world > 1`` each rank takes an interleaved share of the same permutation.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from zoo.data.sources import Annotated, DetectionSource
from zoo.data.transforms import AugmentConfig, colour_jitter, flip_horizontal, flip_vertical, letterbox
from zoo.errors import DataError

__all__ = ["DetectionDataset", "collate_detection", "SeededSampler", "build_dataloader"]


class DetectionDataset(Dataset):
    """Letterboxed ``imgsz`` x ``imgsz`` samples with boxes (and masks when ``with_masks``).

    Items are dicts: ``img`` (3, S, S) uint8 RGB; ``cls`` (N,) int64; ``boxes`` (N, 4) float32
    x1, y1, x2, y2 in the letterboxed image's pixels; ``masks`` (N, S, S) bool (only with masks);
    ``path``; ``ori_shape`` (h, w); ``placement`` (ratio, pad_x, pad_y) mapping original pixels to
    letterboxed ones; ``bad`` (number of unreadable images replaced to make this item).
    """

    def __init__(self, source: DetectionSource, imgsz: int, augment: AugmentConfig | None = None,
                 with_masks: bool = False) -> None:
        if imgsz < 32 or imgsz % 32:
            raise ValueError(f"imgsz must be a multiple of 32 and >= 32, got {imgsz}")
        self.source = source
        self.imgsz = int(imgsz)
        self.augment = augment
        self.with_masks = with_masks
        self.names = source.names

    def __len__(self) -> int:
        return len(self.source)

    def _load(self, index: int) -> tuple[Annotated, int]:
        bad = 0
        for attempt in range(len(self.source)):
            i = (index + attempt) % len(self.source)
            try:
                return self.source.load(i, with_masks=self.with_masks), bad
            except Exception as exc:  # passed the header check at scan time but will not decode
                self.source.problems.report("corrupt image", f"item {i}: {type(exc).__name__}: {exc}")
                bad += 1
        raise DataError("no image in the dataset could be decoded")

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = key if isinstance(key, tuple) else (int(key), None)
        sample, bad = self._load(index)
        aug = self.augment
        rng = np.random.default_rng(seed) if aug is not None else None
        image, boxes, masks, placement, keep = letterbox(
            sample.image, sample.boxes, sample.masks, self.imgsz, rng=rng, scale=aug.scale if aug else 0.0)
        cls = sample.cls[keep]
        if aug is not None and rng is not None:
            if rng.random() < aug.fliplr:
                image, boxes, masks = flip_horizontal(image, boxes, masks)
            if rng.random() < aug.flipud:
                image, boxes, masks = flip_vertical(image, boxes, masks)
            image = colour_jitter(image, rng, aug.hsv_h, aug.hsv_s, aug.hsv_v)
        item = {
            "img": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous(),
            "cls": torch.from_numpy(cls.astype(np.int64)),
            "boxes": torch.from_numpy(boxes.astype(np.float32)),
            "path": sample.path,
            "ori_shape": tuple(sample.image.shape[:2]),
            "placement": (placement.ratio, placement.pad_x, placement.pad_y),
            "bad": bad,
        }
        if masks is not None:
            item["masks"] = torch.from_numpy(np.ascontiguousarray(masks))
        return item


def collate_detection(batch: list[dict]) -> dict:
    """Stack images and flatten labels: ``img`` (B, 3, S, S) uint8; ``cls`` (M,) int64; ``boxes``
    (M, 4); ``batch_idx`` (M,) int64 image index of each box; ``masks`` list of (N_i, S, S) bool or
    ``None``; ``paths``, ``ori_shapes``, ``placements`` lists; ``bad`` total."""
    counts = [len(b["cls"]) for b in batch]
    return {
        "img": torch.stack([b["img"] for b in batch]),
        "cls": torch.cat([b["cls"] for b in batch]) if batch else torch.zeros(0, dtype=torch.int64),
        "boxes": torch.cat([b["boxes"] for b in batch]).reshape(-1, 4),
        "batch_idx": torch.repeat_interleave(torch.arange(len(batch)), torch.tensor(counts, dtype=torch.int64)),
        "masks": [b["masks"] for b in batch] if all("masks" in b for b in batch) else None,
        "paths": [b["path"] for b in batch],
        "ori_shapes": [b["ori_shape"] for b in batch],
        "placements": [b["placement"] for b in batch],
        "bad": sum(b["bad"] for b in batch),
    }


class SeededSampler(Sampler):
    """Yields ``(index, sample_seed)``. With ``shuffle`` the order is a permutation drawn from
    (seed, epoch); ``set_epoch`` must be called each epoch. With ``world > 1`` the permutation is
    padded to a multiple of ``world`` (repeating its start) and rank ``r`` takes items r, r+world, ..."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world: int = 1) -> None:
        if n <= 0:
            raise DataError("the dataset is empty")
        self.n, self.seed, self.shuffle, self.rank, self.world = n, int(seed), shuffle, rank, world
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """``skip``: leave out this rank's first ``skip`` items (an epoch resumed part-way)."""
        self.epoch = int(epoch)
        self.skip = int(skip)

    def __len__(self) -> int:
        return math.ceil(self.n / self.world) - self.skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch, 0xD47A]).permutation(self.n)
        else:
            order = np.arange(self.n)
        total = math.ceil(self.n / self.world) * self.world
        if total > self.n:
            order = np.concatenate([order, order[: total - self.n]])
        for i in order[self.rank::self.world][self.skip:].tolist():
            # The seed depends on (run seed, epoch, index) only: not on the worker or the rank.
            yield i, int(np.random.SeedSequence([self.seed, self.epoch, i]).generate_state(1, np.uint64)[0])


def _worker_init(_: int) -> None:
    # Workers share the machine with the main process; one thread each avoids oversubscription.
    torch.set_num_threads(1)


def build_dataloader(dataset: Dataset, batch_size: int, collate: Callable[[list[dict]], dict], *,
                     shuffle: bool, workers: int = 2, seed: int = 0, rank: int = 0, world: int = 1,
                     pin_memory: bool = False) -> DataLoader:
    """A DataLoader over a :class:`SeededSampler`; ``workers`` is capped by the CPU count."""
    if len(dataset) == 0:
        raise DataError("the dataset is empty")
    sampler = SeededSampler(len(dataset), seed=seed, shuffle=shuffle, rank=rank, world=world)
    nw = max(0, min(int(workers), os.cpu_count() or 1, math.ceil(len(sampler) / max(batch_size, 1))))
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=nw,
        pin_memory=pin_memory, drop_last=False, persistent_workers=nw > 0,
        worker_init_fn=_worker_init if nw > 0 else None,
        # Its own generator: creating worker seeds must not advance the global torch RNG, or a
        # resumed run (which starts its workers at a later epoch) would diverge from an unbroken one.
        generator=torch.Generator().manual_seed(int(seed)),
    )
