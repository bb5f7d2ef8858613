"""Property tests: whatever a YOLO label file or a COCO annotation file holds, building the source
and loading every sample either works (bad items skipped and counted) or raises DataError, with
bounded memory. Any other exception type is a bug: it would reach the user as a traceback."""
from __future__ import annotations

import copy
import json
import resource
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from zoo.data.dataset import DetectionDataset
from zoo.data.sources import CocoSource, YoloSource, list_images
from zoo.errors import DataError

FUZZ = settings(max_examples=50, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Peak resident memory may grow this much over a whole property run. Every bug this guards against
# (a canvas, mask or class list sized by a number from the file) needs gigabytes, tiny inputs need
# a few MB.
MAX_RSS_GROWTH_MB = 300


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _png(path: Path, h: int = 12, w: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(path)


def _exercise(make_source):
    """Build a source and load every sample, raw and through the dataset (with masks, as SAM does).
    Loading must not fail at all: anything that would has to be caught when the source is built."""
    try:
        src = make_source()
    except DataError as exc:
        assert "\n" not in str(exc)
        return None
    assert len(src) >= 1
    for i in range(len(src)):
        got = src.load(i, with_masks=True)
        assert np.isfinite(got.boxes).all() and len(got.boxes) == len(got.cls)
        assert ((got.cls >= 0) & (got.cls < len(src.names))).all()
    data = DetectionDataset(src, 32, with_masks=True)
    for i in range(len(data)):
        assert data[i]["bad"] == 0
    assert src.problems.total == sum(src.problems.counts.values())
    return src


# ---------------------------------------------------------------- YOLO label files

TOKENS = ["0", "1", "2", "-1", "0.5", "0.25", "0.1", "1.5", "nan", "inf", "-inf", "1e400", "1e-400",
          "abc", "0x10", "1_0", "٣", "", "\t", "\x00", "0.5,", "9" * 50]
line = st.lists(st.sampled_from(TOKENS), max_size=12).map(" ".join)
text_label = st.lists(line, max_size=6).map(lambda ls: "\n".join(ls).encode())
# Valid lines with some bytes overwritten / inserted: mostly invalid UTF-8 somewhere.
mutated_label = st.tuples(text_label, st.lists(st.tuples(st.integers(0, 200), st.binary(min_size=1, max_size=3)),
                                               max_size=3)).map(
    lambda t: _splice(t[0] or b"0 0.5 0.5 0.2 0.2", t[1]))
label_bytes = st.one_of(st.binary(max_size=120), text_label, mutated_label)


def _splice(data: bytes, edits: list[tuple[int, bytes]]) -> bytes:
    for at, chunk in edits:
        at %= len(data) + 1
        data = data[:at] + chunk + data[at:]
    return data


@FUZZ
@given(labels=st.lists(label_bytes, min_size=1, max_size=3), twin=st.booleans(), list_file=st.booleans())
def test_yolo_labels_never_crash(labels: list[bytes], twin: bool, list_file: bool) -> None:
    before = _peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i, data in enumerate(labels):
            _png(root / "images" / f"{i}.png")
            (root / "labels").mkdir(exist_ok=True)
            (root / "labels" / f"{i}.txt").write_bytes(data)
        if twin:  # another image sharing 0.txt
            _png(root / "images" / "0.jpg")
        if list_file:  # an image list that is itself broken text
            (root / "list.txt").write_bytes(labels[0])

        def build() -> YoloSource:
            entry = root / "list.txt" if list_file else root / "images"
            return YoloSource(list_images(entry), ["a", "b", "c"], where="fuzz")

        _exercise(build)
    assert _peak_rss_mb() - before < MAX_RSS_GROWTH_MB


# ---------------------------------------------------------------- COCO annotation JSON

BASE = {
    "images": [{"id": 1, "file_name": "a.png", "height": 12, "width": 16},
               {"id": 2, "file_name": "b.png", "height": 12, "width": 16}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 6, 5], "iscrowd": 0,
         "segmentation": [[1, 1, 7, 1, 7, 6, 1, 6]]},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [4, 2, 8, 8],
         "segmentation": {"size": [12, 16], "counts": [60, 8, 124]}},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 3, 3]},
    ],
    "categories": [{"id": 1, "name": "x"}, {"id": 2, "name": "y"}],
}
# Where a mutation may land: every field of the base document and some of their elements.
FIELDS = [("images", i, k) for i in (0, 1) for k in ("id", "file_name", "height", "width")] + [
    ("annotations", i, k) for i in (0, 1, 2) for k in ("id", "image_id", "category_id", "bbox", "iscrowd",
                                                       "segmentation")] + [
    ("annotations", 0, "bbox", 0), ("annotations", 0, "bbox", 2), ("annotations", 2, "bbox", 3),
    ("annotations", 0, "segmentation", 0), ("annotations", 0, "segmentation", 0, 3),
    ("annotations", 1, "segmentation", "size"), ("annotations", 1, "segmentation", "counts"),
    ("annotations", 1, "segmentation", "counts", 0), ("images", 0), ("annotations", 1),
    ("categories", 0, "id"), ("categories", 1, "name"), ("categories",), ("images",), ("annotations",)]
DELETE = object()
numbers = st.one_of(st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, -1, 1, 12, 10**9, 2**63, 10**400, 1e-300, -0.0]))
values = st.one_of(
    st.just(DELETE), st.none(), st.booleans(), numbers, st.text(max_size=6),
    st.sampled_from(["../../../../etc/passwd", "/etc/passwd", "../outside.png", "a.png", "sub/../b.png",
                     "a.png\x00", "", ".", "..", "abc", "12", "!!", "0O0"]),
    st.lists(numbers, max_size=7), st.lists(st.lists(numbers, max_size=9), max_size=2),
    st.dictionaries(st.sampled_from(["size", "counts", "id", "x"]), numbers, max_size=2),
)


def _mutate(doc: dict, path: tuple, value: object) -> None:
    node = doc
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return  # an earlier mutation removed or replaced the container
    key = path[-1]
    try:
        if value is DELETE:
            del node[key]
        else:
            node[key] = value
    except (KeyError, IndexError, TypeError):
        pass


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(FIELDS), values), min_size=1, max_size=4))
def test_coco_annotations_never_crash(edits: list[tuple[tuple, object]]) -> None:
    before = _peak_rss_mb()
    doc = copy.deepcopy(BASE)
    for path, value in edits:
        _mutate(doc, path, value)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _png(root / "outside.png")  # readable, so only the path check keeps it out
        for name in ("a.png", "b.png"):
            _png(root / "ds" / "images" / name)
        ann = root / "ds" / "ann.json"
        ann.write_text(json.dumps(doc))  # NaN / Infinity are written as COCO tools write them
        src = _exercise(lambda: CocoSource(ann, root / "ds" / "images"))
        for path, *_ in (src.records if src is not None else []):  # nothing outside the images folder is ever opened
            assert Path(path).resolve().is_relative_to((root / "ds" / "images").resolve())
    assert _peak_rss_mb() - before < MAX_RSS_GROWTH_MB
