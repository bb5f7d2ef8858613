"""``Model``: a config's rows as one ``nn.Module``, with summary, fusing and weight loading.

Rows live in ``self.model`` (an ``nn.Sequential`` used only as a container) so state-dict keys are
``model.{row}.…``, the layout Ultralytics checkpoints use. The forward pass walks the rows using the
builder's :class:`~zoo.builder.RowRecord` list; nothing is attached to the row modules themselves.
"""
from __future__ import annotations

import contextlib
import gc
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from zoo.builder import RowRecord, build_limits, parse_model
from zoo.checkpoint import Checkpoint, load_weights, read_checkpoint
from zoo.checkpoint_plugins import allowed_plugins, checkpoint_config
from zoo.config import ModelSpec, resolve_spec
from zoo.errors import ConfigError
from zoo.export import export_model
from zoo.inference import predict as predict_images
from zoo.nn.heads import DEFAULT_MAX_DET
from zoo.results import Results
from zoo.summary import summarize
from zoo.version import __version__

__all__ = ["Model", "build_model", "allowed_plugins", "checkpoint_config"]

DRY_RUN_SIZE = 64  # small enough to keep builds fast; stride-32 maps are still 2x2
# Channels-last models take images (up to this many channels) as given: a conv with channels-last
# weights reads an NCHW image and writes NHWC, so converting the image first only adds a strided
# copy into fresh memory (yolov10n at 640: 70.3 vs 72.3 ms, 65.4 vs 68.0 ms, interleaved A/B)
IMAGE_CHANNELS_MAX = 4

RowHook = Callable[[int, RowRecord, Any, Any], None]


@contextlib.contextmanager
def _gc_paused():
    """Hold off Python's cyclic garbage collector while a model is built.

    A build allocates thousands of small containers (each ``nn.Module`` brings eight dicts) and none
    of them is garbage, yet every few hundred allocations the collector walks them, and now and then
    the whole heap (torch alone is ~170k objects): 3-10 ms of a ~70 ms yolov10n build. Reference
    counting still frees everything as usual; only cycle detection waits until the build is done.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Model(nn.Module):
    """Build a model from a shipped cfg's name, a YAML path or dict, or a checkpoint.

    ``model(x)`` returns the head's raw tensors (see :mod:`zoo.nn.heads`); :meth:`predict` takes
    images and returns :class:`~zoo.results.Results`.

    Args:
        cfg: a shipped cfg's name (``"yolov10n"``), a path to a model YAML, the config as a dict, or a
            checkpoint that carries its config (a ``.pt`` / ``.pth`` path or a
            :class:`~zoo.checkpoint.Checkpoint`): the same as :meth:`from_checkpoint`, weights,
            class names and eval mode included.
        scale: scale key (``n``/``s``/...); default: the file-name suffix, else the first scale.
        nc: number of classes, overriding the config's ``nc``.
        ch: input image channels.
        verbose: print the per-row summary after building.
        plugins: extra plugin files / modules to import before building.
        trial_run: run every row once on a small image at build time even when every row's wiring
            declares its spatial rule (the run is needed, and made, whenever one does not: it is how
            the heads learn their input strides then).
        max_params: refuse (ConfigError, before allocating) a model with more parameters than this,
            or a row whose output at 640x640 holds more values; default: the limit in force
            (:func:`zoo.builder.build_limits`, 1e9 unless raised).
        trust_plugins: for a checkpoint, import the plugins its config names (see :meth:`from_checkpoint`).
    """

    def __init__(self, cfg: str | Path | Mapping[str, Any] | Checkpoint, scale: str | None = None,
                 nc: int | None = None, ch: int | None = None, verbose: bool = False, plugins: tuple[str, ...] = (),
                 trial_run: bool = False, max_params: int | None = None, trust_plugins: bool = False) -> None:
        super().__init__()
        ckpt = _checkpoint_source(cfg)
        config = checkpoint_config(ckpt, tuple(plugins), trust_plugins) if ckpt is not None else None
        if config is not None:
            spec = resolve_spec(config, scale=scale or config.get("scale"), nc=nc)
        else:
            spec = resolve_spec(cfg, scale=scale, nc=nc)  # type: ignore[arg-type]
        with _gc_paused(), build_limits(max_params):
            self._build(spec, ch if ch is not None else spec.input_channels, plugins, trial_run)
        # the file it was read from: exports are written beside it by default
        self.checkpoint_path = Path(cfg) if ckpt is not None and isinstance(cfg, (str, Path)) else None
        if ckpt is not None and config is not None:
            self._restore(ckpt, config, {"scale": scale, "nc": nc})
        if verbose:
            self.info()

    def _build(self, spec: ModelSpec, ch: int, plugins: tuple[str, ...], trial_run: bool) -> None:
        graph = parse_model(spec, ch=ch, plugins=tuple(plugins))
        self.model = nn.Sequential(*graph.modules)
        self.records: tuple[RowRecord, ...] = tuple(graph.records)
        self.saved_rows = graph.saved_rows  # rows whose outputs later rows read
        self.yaml: dict[str, Any] = spec.cfg
        self.name = spec.name
        self.source = spec.source
        self.scale = spec.scale
        self.nc = spec.nc
        self.ch = ch
        self.plugins = tuple(plugins)
        self.names = self._class_names()
        self.imgsz: int | None = None  # the size it was trained at, when a checkpoint says
        # the keyword inputs forward() passes on to the rows that declare them (prompts, max_det, conf, ...)
        self.forward_keywords = frozenset(k for r in self.records for k in r.keywords)
        self.memory_format = torch.contiguous_format
        if graph.strides is None or trial_run:
            self.stride = self._dry_run(int(spec.cfg.get("imgsz", DRY_RUN_SIZE)))
        else:  # every row declared where its output sits: the heads get their strides directly
            self.stride = self._apply_strides(dict(enumerate(graph.strides)))

    # ------------------------------------------------------------------ graph
    @property
    def head(self) -> nn.Module:
        return self.model[-1]

    @property
    def task(self) -> str:
        return getattr(self.head, "task", "features")

    def _class_names(self) -> dict[int, str]:
        names = self.yaml.get("names")
        if isinstance(names, dict):
            return {int(k): str(v) for k, v in names.items()}
        if isinstance(names, list):
            return dict(enumerate(map(str, names)))
        return {i: f"class{i}" for i in range(self.nc or 0)}

    def forward(self, x: torch.Tensor, **inputs: Any) -> Any:
        """Run the rows on ``x`` ``(B, ch, H, W)``; keyword ``inputs`` go to the rows that accept them."""
        unknown = set(inputs) - self.forward_keywords
        if unknown:
            raise TypeError(f"{self.name}: no row accepts keyword input(s) {sorted(unknown)}; accepted: {sorted(self.forward_keywords)}")
        if self.memory_format is not torch.contiguous_format and x.dim() == 4 and x.shape[1] > IMAGE_CHANNELS_MAX:
            x = x.contiguous(memory_format=self.memory_format)
        return self.run_rows(x, inputs)

    def run_rows(self, x: torch.Tensor, inputs: Mapping[str, Any] | None = None, keep: tuple[int, ...] = (),
                 hook: RowHook | None = None) -> Any:
        """The forward loop over rows.

        Returns the last row's output; with ``keep`` non-empty returns ``(output, {row: output})``.
        ``hook(index, record, row_input, row_output)`` is called after each row (summaries, checks).
        """
        inputs = inputs or {}
        keep_set = set(keep)
        stored: dict[int, Any] = {}
        kept: dict[int, Any] = {}
        for record, module in zip(self.records, self.model):
            src = record.from_
            if isinstance(src, tuple):
                row_in = [x if s == -1 else stored[s % record.index] for s in src]
            else:
                row_in = x if src == -1 else stored[src % record.index]
            kwargs = {k: inputs[k] for k in record.keywords if k in inputs}
            out = module(row_in, **kwargs)
            if hook is not None:
                hook(record.index, record, row_in, out)
            if record.index in self.saved_rows:
                stored[record.index] = out
            if record.index in keep_set:
                kept[record.index] = out
            x = out
        return (x, kept) if keep else x

    @torch.no_grad()
    def _dry_run(self, size: int) -> torch.Tensor:
        """Run every row once on a small image: a row that cannot take its input is a config error
        (channel mismatch, wrong 'from'), and heads learn the strides of their inputs before they run."""
        strides: dict[int, Any] = {}
        next_row = 0

        def stride_of(t: Any) -> Any:
            if isinstance(t, torch.Tensor) and t.dim() == 4:
                return size / t.shape[-1]
            if isinstance(t, (list, tuple)):
                return [stride_of(v) for v in t]
            return None

        def after_row(i: int, record: RowRecord, row_in: Any, out: Any) -> None:
            nonlocal next_row
            strides[i] = stride_of(out)
            next_row = i + 1
            if next_row < len(self.records):
                self._bind_strides(next_row, strides)

        was_training = self.training
        threads = torch.get_num_threads()
        self.eval()
        # the trial image is tiny: intra-op threads cost more in fork/join than they give (~10% of the
        # build on 2 threads); torch's setting is process-wide, so it is restored right after
        torch.set_num_threads(1)
        try:
            self._bind_strides(0, strides)
            self.run_rows(torch.zeros(1, self.ch, size, size), hook=after_row)
        except ConfigError:
            raise
        except Exception as exc:
            raise self._row_error(
                self.records[next_row], f"fails on its input in the build's trial run ({size}x{size} image)", exc,
                "check the row's 'from' and channel args against the rows it reads",
            ) from None
        finally:
            torch.set_num_threads(threads)
            self.train(was_training)
        return self._head_strides(strides)

    def _apply_strides(self, strides: Mapping[int, Any]) -> torch.Tensor:
        for i, rec in enumerate(self.records):
            try:
                self._bind_strides(i, strides)
            except ConfigError:
                raise
            except Exception as exc:  # a head's set_strides rejecting its args, as the trial run reports it
                raise self._row_error(rec, f"cannot take its input strides {self._input_strides(i, strides)}", exc,
                                      "check the row's args and 'from'") from None
        return self._head_strides(strides)

    def _row_error(self, rec: RowRecord, problem: str, exc: Exception, fix: str) -> ConfigError:
        """A build-time failure of row ``rec`` as one config error line: the problem, the exception's
        first line and the fix."""
        detail = str(exc).splitlines()[0] if str(exc) else ""
        return ConfigError(f"{rec.module} {problem}: {type(exc).__name__}: {detail}; {fix}",
                           file=self.source, row=rec.index, section=rec.section)

    def _head_strides(self, strides: Mapping[int, Any]) -> torch.Tensor:
        head_strides = [s for s in self._input_strides(len(self.records) - 1, strides) if isinstance(s, (int, float))]
        return torch.tensor(head_strides or [1.0])

    def _input_strides(self, i: int, strides: Mapping[int, Any]) -> list[Any]:
        rec = self.records[i]
        return [1.0 if s == -1 and i == 0 else strides.get(s if s >= 0 else i + s) for s in rec.inputs]

    def _bind_strides(self, i: int, strides: Mapping[int, Any]) -> None:
        module = self.model[i]
        if hasattr(module, "set_strides"):
            module.set_strides([float(s) for s in self._input_strides(i, strides)])

    # ------------------------------------------------------------------ utilities
    def info(self, imgsz: int | tuple[int, int] = 640, detailed: bool = False, verbose: bool = True) -> dict[str, Any]:
        """Print the per-row summary at ``imgsz`` and return ``layers``/``params``/``gradients``/``gflops``."""
        return summarize(self, imgsz=imgsz, detailed=detailed, verbose=verbose)

    def fuse(self) -> "Model":
        """Fold BatchNorm into convs and re-parameterise multi-branch blocks, in place."""
        for module in [m for m in self.modules() if m is not self and hasattr(m, "fuse")]:
            module.fuse()
        return self

    def deploy(self) -> "Model":
        """``fuse()`` and drop branches only used in training (e.g. YOLOv10's one-to-many head)."""
        self.fuse()
        for module in [m for m in self.modules() if m is not self and hasattr(m, "drop_training_branches")]:
            module.drop_training_branches()
        return self

    def to_channels_last(self, enabled: bool = True) -> "Model":
        """Fast path for CPU inference: keep weights and activations channels-last (NHWC in memory),
        the layout oneDNN convolutions work in, so no layout reorder happens around each conv.
        Feature-map inputs given to :meth:`forward` are converted; images (<= ``IMAGE_CHANNELS_MAX``
        channels) go to the first conv as they are, which writes channels-last. Outputs keep the
        values of the default layout."""
        self.memory_format = torch.channels_last if enabled else torch.contiguous_format
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                module.weight.data = module.weight.data.contiguous(memory_format=self.memory_format)
        return self

    def load(self, path: str | Path | Mapping[str, torch.Tensor], strict: bool = False, verbose: bool = True):
        """Load weights from a zoo checkpoint, a plain state dict, an Ultralytics checkpoint or a
        registered foreign layout (timm, MobileSAM, ...). Returns a :class:`~zoo.checkpoint.LoadReport`."""
        return load_weights(self, path, strict=strict, verbose=verbose)

    @classmethod
    def from_checkpoint(cls, path: str | Path | Checkpoint, plugins: tuple[str, ...] = (), trust_plugins: bool = False,
                        **overrides: Any) -> "Model":
        """Build the model a checkpoint describes (its stored config) and load its weights; the run's
        name, class names and training image size come back too, and the model is in eval mode
        (call ``.train()`` to train it). ``path`` may be a :class:`Checkpoint` already read;
        ``overrides`` are :class:`Model` arguments (``scale``, ``nc``, ...).

        Reading a checkpoint never imports code: plugins its config names are imported only when the
        caller gives them (``plugins``, matched by file name or module name) or sets ``trust_plugins``.
        """
        ckpt = path if isinstance(path, Checkpoint) else read_checkpoint(path)
        model = cls(ckpt, plugins=tuple(plugins), trust_plugins=trust_plugins, **overrides)
        if not isinstance(path, Checkpoint):
            model.checkpoint_path = Path(path)
        return model

    def _restore(self, ckpt: Checkpoint, config: Mapping[str, Any], overrides: Mapping[str, Any]) -> None:
        """Load a checkpoint's weights into the model just built from its config, then its name, names,
        image size; leave the model in eval mode."""
        report = self.load(ckpt, strict=False, verbose=False)
        changed = {k for k, v in overrides.items() if v is not None and v != config.get(k)}
        if "scale" not in changed:
            # the file describes this very model: anything it does not fill would run on random weights
            # (but the head, when it was rebuilt for another class count)
            head = f"model.{len(self.records) - 1}." if "nc" in changed else None
            report.require_fit("the checkpoint does not match the config it carries (corrupt or edited?)", head)
        self.name = str(ckpt.extra.get("name") or self.name)
        names = ckpt.extra.get("names")
        if isinstance(names, dict):
            names = [names[k] for k in sorted(names)]
        if isinstance(names, list) and len(names) == len(self.names):
            self.names = dict(enumerate(map(str, names)))
        args = ckpt.extra.get("args")
        imgsz = ckpt.extra.get("imgsz") or (args.get("imgsz") if isinstance(args, Mapping) else None)
        if isinstance(imgsz, int) and not isinstance(imgsz, bool) and imgsz > 0:
            self.imgsz = imgsz
        self.eval()

    def save(self, path: str | Path) -> Path:
        """Write a zoo checkpoint (weights, config, scale, class names, name, image size) that
        ``Model(path)`` / :meth:`from_checkpoint` and ``zoo info/val/predict`` read back. Save the
        model as built: a fused or deployed model no longer matches its config. Returns ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        ckpt = {"model_state": {k: v.detach().cpu() for k, v in self.state_dict().items()}, "yaml": dict(self.yaml),
                "scale": self.scale, "names": [self.names[i] for i in sorted(self.names)], "name": self.name,
                "plugins": list(self.plugins), "imgsz": self.imgsz, "version": __version__,
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            torch.save(ckpt, tmp)
            os.replace(tmp, path)  # a reader never sees half a file
        finally:
            tmp.unlink(missing_ok=True)
        return path

    # ------------------------------------------------------------------ inference
    def predict(self, source: Any, conf: float = 0.25, imgsz: int | None = None, max_det: int = DEFAULT_MAX_DET,
                device: str | torch.device | None = None, batch: int = 1) -> list[Results]:
        """Detect or classify the images of ``source``: a path, a folder, a ``PIL.Image``, an
        ``(H, W, 3)`` uint8 RGB array, a ``(3, H, W)`` / ``(B, 3, H, W)`` tensor (0..1 floats) or a
        list of these. Returns one :class:`~zoo.results.Results` per image: ``boxes`` (x1, y1, x2, y2
        in the original image's pixels), ``scores``, ``cls`` with score > ``conf`` (at most
        ``max_det``), or class ``probs``. ``imgsz`` defaults to the size the checkpoint was trained
        at, else the cfg's ``imgsz``, else 320 (detect) / 224 (classify). ``device`` moves the model
        there; ``batch`` images run per forward. Runs in eval mode under ``no_grad`` and restores the
        model's mode after. SAM models take prompts: use :class:`zoo.SamPredictor`."""
        return predict_images(self, source, conf=conf, imgsz=imgsz, max_det=max_det, device=device, batch=batch)

    # ------------------------------------------------------------------ export
    def export(self, format: str = "onnx", imgsz: int | tuple[int, int] | None = None, dynamic: bool = False,
               batch: int = 1, half: bool = False, opset: int | None = None, simplify: bool = False,
               file: str | Path | None = None) -> Path:
        """Write the deployed model (a copy: this one is unchanged) as ``format`` ``"onnx"`` or
        ``"torchscript"`` and return the file: beside the checkpoint it was read from, else
        ``<name>.onnx`` / ``<name>.torchscript`` in the current folder, unless ``file`` says.

        The graph takes ``(B, 3, H, W)`` RGB in 0..1 and normalises inside; it returns detections
        ``(B, K, 6)`` (NMS-free, best first) or class probabilities. ``imgsz``: N or (H, W), stride
        multiples (default: the size :meth:`predict` uses); ``dynamic``: batch, height and width free;
        ``batch``: the example batch; ``half``: float16 (CUDA runtimes); ``opset``: default 17;
        ``simplify``: onnxscript's optimizer. The file carries names, imgsz, stride, task and version
        (:class:`zoo.export.ExportMetadata`); run it with :func:`zoo.load_exported` (``.predict(source)``)
        or ``zoo predict / val / benchmark FILE``.

        A SAM exports as two ONNX graphs (:mod:`zoo.export.sam`): the image encoder, whose path is
        returned, and the prompt decoder beside it (``x-encoder.onnx`` -> ``x-decoder.onnx``); ``file``
        is then a folder or a path prefix."""
        return export_model(self, format=format, imgsz=imgsz, dynamic=dynamic, batch=batch, half=half, opset=opset,
                            simplify=simplify, file=file)


def _checkpoint_source(cfg: Any) -> Checkpoint | None:
    """A checkpoint ``Model(cfg)`` was given (a :class:`Checkpoint`, or a ``.pt`` / ``.pth`` path), read."""
    if isinstance(cfg, Checkpoint):
        return cfg
    if isinstance(cfg, (str, Path)) and Path(cfg).suffix.lower() in (".pt", ".pth"):
        return read_checkpoint(cfg)
    return None


def build_model(source: str | Path, scale: str | None = None, nc: int | None = None, plugins: tuple[str, ...] = (),
                trust_plugins: bool = False) -> Model:
    """A model from a YAML cfg or a checkpoint (``.pt``/``.pth``) that carries its config; plugins a
    checkpoint names are imported only when given in ``plugins`` or with ``trust_plugins``."""
    path = Path(source)
    if path.suffix in (".pt", ".pth"):
        overrides: dict[str, Any] = {}
        if scale:
            overrides["scale"] = scale
        if nc:
            overrides["nc"] = nc
        return Model.from_checkpoint(path, plugins=tuple(plugins), trust_plugins=trust_plugins, **overrides)
    return Model(source, scale=scale, nc=nc, plugins=tuple(plugins))
