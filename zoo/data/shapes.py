"""The embedded "shapes" dataset: coloured shapes on textured, noisy backgrounds.

Every image is rendered on demand from ``(seed, split, index)`` alone, so the dataset needs no
files, is identical in every process (DataLoader workers, DDP ranks) and on every machine, and
any sample can be rebuilt without rendering the ones before it. Each sample carries class ids,
tight boxes and per-instance visible masks, so the same images serve detection, promptable
segmentation and (as crops) classification.

Object classes, in id order: circle, rectangle, triangle, ellipse, star.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from zoo.data.problems import DataProblems
from zoo.errors import DataError

__all__ = ["SHAPE_NAMES", "ShapesConfig", "ShapesSample", "ShapesSplit", "render_shapes", "polygon_mask"]

SHAPE_NAMES: tuple[str, ...] = ("circle", "rectangle", "triangle", "ellipse", "star")
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class ShapesConfig:
    """How the shapes dataset is generated.

    ``size`` is the rendered image size (height, width) in pixels; objects are ``min_scale`` to
    ``max_scale`` of the shorter image side across. ``crops_*`` size the classification-crop
    variant (one object per crop).
    """

    seed: int = 0
    n_train: int = 2000
    n_val: int = 200
    size: tuple[int, int] = (256, 256)
    min_objects: int = 1
    max_objects: int = 6
    min_scale: float = 0.10
    max_scale: float = 0.35
    noise: float = 8.0  # std of per-pixel Gaussian noise, in 0..255 units
    names: tuple[str, ...] = field(default=SHAPE_NAMES)

    def __post_init__(self) -> None:
        if isinstance(self.size, int):
            object.__setattr__(self, "size", (int(self.size), int(self.size)))
        else:
            object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        object.__setattr__(self, "names", tuple(self.names))
        if len(self.size) != 2 or min(self.size) < 16:
            raise ValueError(f"shapes: size must be (height, width) with both >= 16, got {self.size}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"shapes: need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        if not 0 < self.min_scale <= self.max_scale <= 0.9:
            raise ValueError(f"shapes: need 0 < min_scale <= max_scale <= 0.9, got {self.min_scale}, {self.max_scale}")
        if self.n_train < 0 or self.n_val < 0:
            raise ValueError("shapes: n_train and n_val must be >= 0")
        unknown = [n for n in self.names if n not in SHAPE_NAMES]
        if unknown or not self.names:
            raise ValueError(f"shapes: names must be a non-empty subset of {SHAPE_NAMES}, got {self.names}")

    def count(self, split: str) -> int:
        if split not in ("train", "val"):
            raise ValueError(f"shapes: split must be 'train' or 'val', got {split!r}")
        return self.n_train if split == "train" else self.n_val

    @classmethod
    def from_options(cls, options: dict[str, object]) -> "ShapesConfig":
        """Build from string/number options (``--data shapes:n_train=500,size=192``)."""
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, object] = {}
        for key, value in options.items():
            if key not in known:
                raise ValueError(f"shapes: unknown option '{key}' (known: {', '.join(known)})")
            if key == "size":
                parts = [int(v) for v in str(value).replace("x", " ").split()]
                kwargs[key] = (parts[0], parts[0]) if len(parts) == 1 else tuple(parts[:2])
            elif key == "names":
                kwargs[key] = tuple(value) if isinstance(value, (list, tuple)) else tuple(str(value).split("/"))
            else:
                kwargs[key] = type(getattr(cls(), key))(value)
        return cls(**kwargs)

    def with_size(self, size: int | tuple[int, int]) -> "ShapesConfig":
        return replace(self, size=(size, size) if isinstance(size, int) else tuple(size))

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["size"] = list(self.size)
        d["names"] = list(self.names)
        return d


@dataclass
class ShapesSample:
    """One rendered image. ``image``: (H, W, 3) uint8 RGB; ``cls``: (N,) int64; ``boxes``: (N, 4)
    float32 x1, y1, x2, y2 in pixels (tight around the visible pixels); ``masks``: (N, H, W) bool."""

    image: np.ndarray
    cls: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray


def _rng(cfg: ShapesConfig, split: str, index: int, stream: int = 0) -> np.random.Generator:
    # SeedSequence over the tuple keeps samples independent and order-free.
    return np.random.default_rng([cfg.seed, _SPLIT_CODES[split], index, stream])


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a coarse random grid bilinearly upsampled to (h, w)."""
    gh, gw = cells + 1, max(2, round(cells * w / h)) + 1
    grid = rng.standard_normal((gh, gw))
    ys = np.linspace(0, gh - 1, h)
    xs = np.linspace(0, gw - 1, w)
    y0 = np.clip(ys.astype(int), 0, gh - 2)
    x0 = np.clip(xs.astype(int), 0, gw - 2)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    g00 = grid[y0][:, x0]
    g01 = grid[y0][:, x0 + 1]
    g10 = grid[y0 + 1][:, x0]
    g11 = grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fy) * (1 - fx) + g01 * (1 - fy) * fx + g10 * fy * (1 - fx) + g11 * fy * fx) / 1.5


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A float (H, W, 3) background: base colour, a texture (blotches / stripes / checks) and shading."""
    base = rng.uniform(40, 215, size=3)
    img = np.broadcast_to(base, (h, w, 3)).astype(np.float32).copy()
    kind = rng.integers(0, 4)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # colour blotches
        for c in range(3):
            img[..., c] += 35 * _smooth_noise(rng, h, w, int(rng.integers(3, 9)))
    elif kind == 1:  # stripes at a random angle
        theta = rng.uniform(0, math.pi)
        period = rng.uniform(6, 24)
        wave = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period)
        img += (rng.uniform(10, 30) * wave)[..., None] * rng.uniform(0.5, 1.0, size=3)
    elif kind == 2:  # checks
        cell = rng.uniform(8, 32)
        checks = ((xx // cell + yy // cell) % 2) * 2 - 1
        img += (rng.uniform(8, 25) * checks)[..., None]
    # kind 3: plain, only the shading and noise below
    img += (25 * _smooth_noise(rng, h, w, 2))[..., None]  # broad illumination change
    return img


def polygon_mask(vertices: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test at pixel centres. ``vertices``: (V, 2) x, y; ``ys``/``xs``:
    broadcastable pixel-centre coordinates. Returns a bool array of their broadcast shape."""
    inside = np.zeros(np.broadcast(ys, xs).shape, dtype=bool)
    x_prev, y_prev = vertices[-1]
    for x_cur, y_cur in vertices:
        crosses = (y_cur > ys) != (y_prev > ys)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = (x_prev - x_cur) * (ys - y_cur) / (y_prev - y_cur) + x_cur
        inside ^= crosses & (xs < x_at)
        x_prev, y_prev = x_cur, y_cur
    return inside


def _shape_mask(name: str, rng: np.random.Generator, cx: float, cy: float, size: float,
                ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Mask of one shape of nominal diameter ``size`` centred at (cx, cy) on the given pixel grid."""
    angle = rng.uniform(0, 2 * math.pi)
    ca, sa = math.cos(angle), math.sin(angle)
    dx, dy = xs - cx, ys - cy
    u, v = dx * ca + dy * sa, -dx * sa + dy * ca  # coordinates in the shape's rotated frame
    if name == "circle":
        r = size / 2
        return dx * dx + dy * dy <= r * r
    if name == "ellipse":
        a = size / 2
        b = a * rng.uniform(0.40, 0.65)  # clearly flatter than a circle
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if name == "rectangle":
        half_w = size / 2
        half_h = half_w * rng.uniform(0.45, 1.0)
        return (np.abs(u) <= half_w) & (np.abs(v) <= half_h)
    if name == "triangle":
        r = size / 2
        jitter = rng.uniform(-0.25, 0.25, size=3)
        angles = angle + np.array([0.0, 2 * math.pi / 3, 4 * math.pi / 3]) + jitter
        verts = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1)
        return polygon_mask(verts, ys, xs)
    if name == "star":
        outer = size / 2
        inner = outer * rng.uniform(0.38, 0.5)
        k = np.arange(10)
        radii = np.where(k % 2 == 0, outer, inner)
        angles = angle + k * math.pi / 5
        verts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
        return polygon_mask(verts, ys, xs)
    raise ValueError(f"unknown shape '{name}'")


def _object_colour(rng: np.random.Generator, near: np.ndarray) -> np.ndarray:
    """A saturated colour far enough from the local background ``near`` (RGB) to be visible."""
    best, best_d = None, -1.0
    for _ in range(12):
        hue = rng.uniform(0, 1)
        sat = rng.uniform(0.6, 1.0)
        val = rng.uniform(0.35, 1.0)
        rgb = _hsv_to_rgb(hue, sat, val) * 255
        d = float(np.abs(rgb - near).sum())
        if d > 150:
            return rgb
        if d > best_d:
            best, best_d = rgb, d
    return best  # type: ignore[return-value]


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], dtype=np.float64)


def render_shapes(cfg: ShapesConfig, split: str, index: int) -> ShapesSample:
    """Render sample ``index`` of ``split``; the result depends only on (cfg, split, index)."""
    rng = _rng(cfg, split, index)
    h, w = cfg.size
    img = _background(rng, h, w)
    n_target = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    short = min(h, w)
    masks: list[np.ndarray] = []
    classes: list[int] = []
    occupied = np.zeros((h, w), dtype=bool)
    for _ in range(n_target):
        for _attempt in range(25):
            cls = int(rng.integers(0, len(cfg.names)))
            size = rng.uniform(cfg.min_scale, cfg.max_scale) * short
            cx = rng.uniform(size * 0.35, w - size * 0.35)
            cy = rng.uniform(size * 0.35, h - size * 0.35)
            x0, x1 = max(0, int(cx - size * 0.6)), min(w, int(cx + size * 0.6) + 1)
            y0, y1 = max(0, int(cy - size * 0.6)), min(h, int(cy + size * 0.6) + 1)
            ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
            xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
            local = _shape_mask(cfg.names[cls], rng, cx, cy, size, ys, xs)
            area = int(local.sum())
            if area < 12:
                continue
            # Light overlap only: every object stays mostly visible, so its label is unambiguous.
            if (local & occupied[y0:y1, x0:x1]).sum() > 0.15 * area:
                continue
            mask = np.zeros((h, w), dtype=bool)
            mask[y0:y1, x0:x1] = local
            near = img[y0:y1, x0:x1][local].mean(axis=0)
            colour = _object_colour(rng, near)
            shade = 1.0 + 0.12 * _smooth_noise(rng, y1 - y0, x1 - x0, 2)[..., None]
            patch = img[y0:y1, x0:x1]
            patch[local] = (colour * shade)[local]
            for prev in masks:  # the new object hides what it covers
                prev &= ~mask
            masks.append(mask)
            classes.append(cls)
            occupied |= mask
            break
    img += rng.normal(0, cfg.noise, size=img.shape).astype(np.float32)
    image = np.clip(img, 0, 255).astype(np.uint8)

    keep = [i for i, m in enumerate(masks) if m.sum() >= 8]
    boxes = np.zeros((len(keep), 4), dtype=np.float32)
    for j, i in enumerate(keep):
        ys_any = np.flatnonzero(masks[i].any(axis=1))
        xs_any = np.flatnonzero(masks[i].any(axis=0))
        boxes[j] = (xs_any[0], ys_any[0], xs_any[-1] + 1, ys_any[-1] + 1)
    mask_arr = np.stack([masks[i] for i in keep]) if keep else np.zeros((0, h, w), dtype=bool)
    return ShapesSample(image, np.array([classes[i] for i in keep], dtype=np.int64), boxes, mask_arr)


class ShapesSplit:
    """One split of the embedded shapes data: what every view of it (whole images with boxes and
    masks, or one-object crops) shares. Rendered on demand, so nothing is ever skipped."""

    label = "shapes"

    def __init__(self, cfg: ShapesConfig, split: str) -> None:
        self.cfg = cfg
        self.split = split
        self.names = list(cfg.names)
        self.problems = DataProblems()
        self._len = cfg.count(split)
        if self._len == 0:
            raise DataError(f"{self.label}: the {split} split is empty (n_{split}=0)")

    def __len__(self) -> int:
        return self._len
