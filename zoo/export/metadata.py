"""What an exported file says about itself, so a runtime needs nothing else to use it.

Written as ONNX ``metadata_props`` (string key/value pairs: strings as they are, everything else as
JSON) and, for TorchScript, as one JSON file in the archive's ``_extra_files``
(:data:`TORCHSCRIPT_FILE`). Read back into the same :class:`ExportMetadata`.

Preprocessing contract (``input_*`` and ``mean`` / ``std``): the graph takes ``(B, 3, H, W)`` float RGB
in 0..1, i.e. uint8 pixels divided by 255 (``input_scale``), and does the model's own normalisation
inside (``x - mean``, then ``/ std``, 0..1 units; ``null`` when the model has none). Detectors expect
a letterboxed square (``resize: letterbox``: aspect kept, centred, grey 114 padding), classifiers
the shorter side resized to ``imgsz`` and the central square cut (``resize: center_crop``): the same
steps as ``zoo predict`` on the PyTorch model.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from zoo.errors import ZooError

__all__ = ["ExportMetadata", "TORCHSCRIPT_FILE", "RESIZE_BY_TASK", "OUTPUTS_BY_TASK", "NMS_CANDIDATES"]

TORCHSCRIPT_FILE = "zoo_metadata.json"  # its name inside a TorchScript archive's extra files
RESIZE_BY_TASK = {"detect": "letterbox", "classify": "center_crop"}
OUTPUTS_BY_TASK = {
    "detect": "detections (B, K, 6) float: x1, y1, x2, y2 in input pixels, score, class; best first",
    "classify": "probabilities (B, nc) float: softmax of the logits",
    "features": "the model's output tensor(s), unchanged",
}
NMS_CANDIDATES = ("candidates (B, A, 4 + nc) float: x, y, w, h in input pixels, then class probabilities, one row "
                  "per anchor; per-class NMS (IoU nms_iou) gives the detections")


@dataclass
class ExportMetadata:
    """The facts a runtime needs; every field round-trips through both file formats."""

    task: str
    names: dict[int, str]
    imgsz: tuple[int, int]  # (H, W) exported at; the only size a static graph takes
    stride: int  # largest stride: a dynamic graph takes multiples of it
    model: str = ""
    zoo_version: str = ""
    format: str = "onnx"
    batch: int = 1  # exported batch; the only one a static graph takes
    dynamic: bool = False  # batch, height and width symbolic
    half: bool = False  # float16 input, weights and output
    opset: int | None = None
    max_det: int | None = None  # detections per image (rows of K), detectors only
    nms_iou: float | None = None  # set: the graph outputs NMS candidates and the runtime runs NMS at this IoU
    input_name: str = "images"
    output_names: list[str] = field(default_factory=lambda: ["output"])
    input_layout: str = "NCHW RGB"
    input_scale: float = 1 / 255  # uint8 pixels times this = the graph's 0..1 input
    mean: list[float] | None = None  # subtracted inside the graph (0..1 units), after input_scale
    std: list[float] | None = None  # divided by inside the graph (0..1 units), after mean
    resize: str = "letterbox"  # how an image of another size is brought to imgsz (see module doc)
    outputs: str = ""  # what the outputs are, in words

    # ------------------------------------------------------------------ string form
    def to_strings(self) -> dict[str, str]:
        """``{key: value}`` for ONNX ``metadata_props``: strings as they are, the rest JSON."""
        out = {}
        for key, value in asdict(self).items():
            if key == "names":
                value = {str(k): v for k, v in value.items()}
            out[key] = value if isinstance(value, str) else json.dumps(value)
        return out

    @classmethod
    def from_strings(cls, props: Mapping[str, str], where: str) -> "ExportMetadata":
        """The inverse of :meth:`to_strings`; ``where`` names the file in errors. Keys other tools
        wrote are ignored; a missing required key is a one-line error."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in props:
                continue
            raw = props[f.name]
            values[f.name] = raw if f.type == "str" else _json(raw, f.name, where)
        missing = [k for k in ("task", "names", "imgsz", "stride") if k not in values]
        if missing:
            raise ZooError(f"{where}: not a zoo export (metadata lacks {', '.join(missing)}); "
                           "export it with `zoo export MODEL`")
        values["names"] = {int(k): str(v) for k, v in values["names"].items()}
        values["imgsz"] = tuple(int(v) for v in values["imgsz"])
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_strings(), indent=1)

    @classmethod
    def from_json(cls, text: str, where: str) -> "ExportMetadata":
        return cls.from_strings(_json(text, TORCHSCRIPT_FILE, where), where)


def _json(raw: str, key: str, where: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise ZooError(f"{where}: metadata {key!r} is not valid JSON ({raw[:40]!r}); re-export the model") from None
