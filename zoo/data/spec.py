"""Turning the ``--data`` argument into a dataset description, with one-line errors.

Accepted forms:

- nothing or ``shapes``: the embedded shapes dataset; options as ``shapes:n_train=500,size=192``.
- a YOLO ``data.yaml``: ``path`` (root, optional), ``train`` / ``val`` (image folder, ``.txt``
  list, or a list of these, relative to the root), ``names`` (list or ``{id: name}``) or ``nc``
  (a positive int; at most 100,000 without ``names``).
  With the classify task, ``train`` / ``val`` are ImageFolder roots instead.
- a COCO layout in a data.yaml: ``train: {annotations: a.json, images: dir}`` (or just the JSON
  path; images then sit beside it), same for ``val``.
- a folder with ``train/`` and ``val/`` class sub-folders (ImageFolder, classify), or a folder holding
  a ``data.yaml``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zoo.data.class_folders import ClassificationSource, ImageFolderSource, ShapesCropSource
from zoo.data.shapes import ShapesConfig
from zoo.data.sources import CocoSource, DetectionSource, ShapesSource, YoloSource, list_images
from zoo.errors import DataError

__all__ = ["DataSpec", "resolve_data"]


@dataclass
class DataSpec:
    """Where the train / val splits come from. ``kind``: shapes, yolo, coco or imagefolder."""

    kind: str
    where: str
    names: list[str]
    shapes: ShapesConfig | None = None
    splits: dict[str, Any] = field(default_factory=dict)

    def detection_source(self, split: str) -> DetectionSource:
        if self.kind == "shapes":
            assert self.shapes is not None
            return ShapesSource(self.shapes, split)
        if self.kind == "yolo":
            entry = self.splits[split]
            images = list_images(entry)
            if not images:
                raise DataError(f"{self.where}: the {split} split ({_show(entry)}) has no images")
            return YoloSource(images, self.names, where=f"{self.where} ({split})")
        if self.kind == "coco":
            ann, images_dir = self.splits[split]
            return CocoSource(ann, images_dir, where=f"{self.where} ({split})")
        raise DataError(f"{self.where}: a {self.kind} dataset has no boxes; it only serves classification")

    def classification_source(self, split: str) -> ClassificationSource:
        if self.kind == "shapes":
            assert self.shapes is not None
            return ShapesCropSource(self.shapes, split)
        if self.kind == "imagefolder":
            return ImageFolderSource(self.splits[split], self.names)
        raise DataError(f"{self.where}: a {self.kind} dataset is for detection; classification needs an "
                        "ImageFolder tree (train/<class>/..., val/<class>/...) or shapes")


def _show(entry: Any) -> str:
    return ", ".join(str(e) for e in entry) if isinstance(entry, list) else str(entry)


def _parse_shapes(text: str, task: str, imgsz: int) -> DataSpec:
    options: dict[str, object] = {}
    if ":" in text:
        for part in text.split(":", 1)[1].split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise DataError(f"data '{text}': options must look like key=value, got '{part}'")
            key, value = part.split("=", 1)
            options[key.strip()] = value.strip()
    if "size" not in options:
        # Classification crops are cut from bigger images so that small objects still fill a crop.
        size = imgsz if task != "classify" else min(max(2 * imgsz, 64), 512)
        options["size"] = str(size)
    for key, value in options.items():  # name the option whose value does not parse
        try:
            ShapesConfig.from_options({key: value})
        except (TypeError, ValueError) as exc:
            if "unknown option" in str(exc):
                raise DataError(f"data '{text}': {exc}") from None
            kind = {"int": "an integer", "float": "a number"}.get(type(getattr(ShapesConfig(), key, "")).__name__,
                                                                  "a value")
            kind = "numbers such as 192 or 192x128" if key == "size" else kind
            raise DataError(f"data '{text}': {key}={value} is not valid; {key} takes {kind} "
                            f"(e.g. shapes:n_train=500,size=192)") from None
    try:
        cfg = ShapesConfig.from_options(options)
    except (TypeError, ValueError) as exc:
        raise DataError(f"data '{text}': {exc}") from None
    return DataSpec("shapes", "shapes", list(cfg.names), shapes=cfg)


# Without 'names' every class gets a default name, one string per class. A typo such as
# nc: 1000000000 would build a billion of them (a MemoryError after a minute or more). Datasets
# with unnamed classes are small (nc is typed by hand); the biggest label sets in use (ImageNet-21k,
# Open Images) stay below this, and one that truly needs more lists its classes in 'names'.
MAX_UNNAMED_CLASSES = 100_000


def _nc(doc: dict, where: str) -> int | None:
    """``nc`` of a data.yaml as a positive int, ``None`` when absent."""
    if "nc" not in doc or doc["nc"] is None:
        return None
    nc = doc["nc"]
    if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
        shown = repr(nc) if len(repr(nc)) <= 40 else repr(nc)[:37] + "..."
        raise DataError(f"{where}: 'nc' must be a positive integer (the number of classes), got {shown}")
    return nc


def _names(doc: dict, where: str) -> list[str]:
    nc = _nc(doc, where)
    given = _listed_names(doc.get("names"), where)
    if given is not None:
        if nc is not None and len(given) != nc:
            raise DataError(f"{where}: 'nc' is {nc} but 'names' lists {len(given)} classes; "
                            "fix one of them or drop 'nc'")
        return given
    if nc is not None:
        if nc > MAX_UNNAMED_CLASSES:
            raise DataError(f"{where}: 'nc' is {nc}, more than {MAX_UNNAMED_CLASSES} classes without 'names'; "
                            "check 'nc' for a typo, or list the classes in 'names'")
        return [str(i) for i in range(nc)]
    raise DataError(f"{where}: needs 'names' (a list or {{id: name}}) or 'nc'")


def _listed_names(names: object, where: str) -> list[str] | None:
    """Class names from a data.yaml ``names`` (a list or ``{id: name}``); ``None`` when not given."""
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise DataError(f"{where}: 'names' keys must be class ids") from None
        if keys != list(range(len(keys))):
            raise DataError(f"{where}: 'names' ids must be 0..{len(keys) - 1} without gaps")
        return [str(names[k] if k in names else names[str(k)]) for k in keys]
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    return None


def _class_folders(root: Path, where: str) -> list[str]:
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not names:
        raise DataError(f"{where}: '{root}' has no class sub-folders")
    return names


def _from_yaml(path: Path, task: str) -> DataSpec:
    where = str(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DataError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not UTF-8 text (invalid byte at offset {exc.start}); save it as UTF-8") from None
    if not isinstance(doc, dict):
        raise DataError(f"{where}: expected a mapping with 'train', 'val' and 'names'")
    root = Path(str(doc.get("path") or path.parent))
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    for split in ("train", "val"):
        if split not in doc or doc[split] in (None, ""):
            raise DataError(f"{where}: missing '{split}'")

    def locate(entry: Any, split: str) -> Path:
        p = Path(str(entry))
        p = p if p.is_absolute() else root / p
        if not p.exists():
            raise DataError(f"{where}: {split} path '{entry}' does not exist (looked for {p})")
        return p

    first = doc["train"]
    is_coco = isinstance(first, dict) or str(first).endswith(".json")
    if is_coco:
        splits = {}
        for split in ("train", "val"):
            entry = doc[split]
            if isinstance(entry, dict):
                if "annotations" not in entry:
                    raise DataError(f"{where}: {split} needs 'annotations' (a COCO JSON) and 'images' (a folder)")
                ann = locate(entry["annotations"], split)
                images = locate(entry.get("images", ann.parent), split)
            else:
                ann = locate(entry, split)
                images = ann.parent
            splits[split] = (ann, images)
        names = CocoSource.peek_names(splits["train"][0], where)
        return DataSpec("coco", where, names, splits=splits)
    if task == "classify":
        splits = {s: locate(doc[s], s) for s in ("train", "val")}
        names = _names(doc, where) if "names" in doc else _class_folders(splits["train"], where)
        return DataSpec("imagefolder", where, names, splits=splits)
    splits = {}
    for split in ("train", "val"):
        entry = doc[split]
        splits[split] = [locate(e, split) for e in entry] if isinstance(entry, list) else locate(entry, split)
    return DataSpec("yolo", where, _names(doc, where), splits=splits)


def resolve_data(data: str | None, task: str, imgsz: int) -> DataSpec:
    """Describe the dataset named by ``--data`` (see the module docstring); raises :class:`DataError`."""
    text = (data or "shapes").strip()
    if text == "shapes" or text.startswith("shapes:"):
        return _parse_shapes(text, task, imgsz)
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(f"data '{text}' not found (expected a data.yaml, a COCO .json, an image folder or 'shapes')")
    if path.is_dir():
        for candidate in ("data.yaml", "data.yml"):
            if (path / candidate).is_file():
                return _from_yaml(path / candidate, task)
        if (path / "train").is_dir() and (path / "val").is_dir():
            if task != "classify":
                raise DataError(f"'{text}' looks like an ImageFolder tree, which has no boxes; "
                                "detection needs a data.yaml (YOLO or COCO layout)")
            return DataSpec("imagefolder", text, _class_folders(path / "train", text),
                            splits={"train": path / "train", "val": path / "val"})
        raise DataError(f"folder '{text}' has neither a data.yaml nor train/ and val/ sub-folders")
    if path.suffix in (".yaml", ".yml"):
        return _from_yaml(path, task)
    if path.suffix == ".json":
        names = CocoSource.peek_names(path, text)
        return DataSpec("coco", text, names, splits={"train": (path, path.parent), "val": (path, path.parent)})
    raise DataError(f"data '{text}': expected a .yaml, a .json or a folder")
