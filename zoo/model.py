"""``Model``: a config's rows as one ``nn.Module``, with summary, fusing and weight loading.

Rows live in ``self.model`` (an ``nn.Sequential`` used only as a container) so state-dict keys are
``model.{row}.…``, the layout Ultralytics checkpoints use. The forward pass walks the rows using the
builder's :class:`~zoo.builder.RowRecord` list; nothing is attached to the row modules themselves.
"""
from __future__ import annotations

import contextlib
import gc
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from zoo.builder import RowRecord, build_limits, parse_model
from zoo.checkpoint import Checkpoint, load_weights, read_checkpoint
from zoo.config import ModelSpec, resolve_spec
from zoo.errors import CheckpointError, ConfigError
from zoo.summary import summarize

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
    """Build a model from a YAML path or dict.

    Args:
        cfg: path to a model YAML, or the config as a dict.
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
    """

    def __init__(self, cfg: str | Path | Mapping[str, Any], scale: str | None = None, nc: int | None = None,
                 ch: int = 3, verbose: bool = False, plugins: tuple[str, ...] = (),
                 trial_run: bool = False, max_params: int | None = None) -> None:
        super().__init__()
        spec = resolve_spec(cfg, scale=scale, nc=nc)
        with _gc_paused(), build_limits(max_params):
            self._build(spec, ch, plugins, trial_run)
        if verbose:
            self.info()

    def _build(self, spec: ModelSpec, ch: int, plugins: tuple[str, ...], trial_run: bool) -> None:
        graph = parse_model(spec, ch=ch, plugins=tuple(plugins))
        self.model = nn.Sequential(*graph.modules)
        self.records: tuple[RowRecord, ...] = tuple(graph.records)
        self.save = graph.save
        self.yaml: dict[str, Any] = spec.cfg
        self.name = spec.name
        self.source = spec.source
        self.scale = spec.scale
        self.nc = spec.nc
        self.ch = ch
        self.plugins = tuple(plugins)
        self.names = self._class_names()
        self._keywords = {k for r in self.records for k in r.keywords}
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
        unknown = set(inputs) - self._keywords
        if unknown:
            raise TypeError(f"{self.name}: no row accepts keyword input(s) {sorted(unknown)}; accepted: {sorted(self._keywords)}")
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
            if record.index in self.save:
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
        name and class names come back too. ``path`` may be a :class:`Checkpoint` already read.

        Reading a checkpoint never imports code: plugins its config names are imported only when the
        caller gives them (``plugins``, matched by file name or module name) or sets ``trust_plugins``.
        """
        ckpt = path if isinstance(path, Checkpoint) else read_checkpoint(path)
        config = checkpoint_config(ckpt, tuple(plugins), trust_plugins)
        kwargs = {"scale": config.get("scale"), "plugins": tuple(plugins)}
        kwargs.update(overrides)
        model = cls(config, **kwargs)
        report = model.load(ckpt, strict=False, verbose=False)
        changed = {k for k, v in overrides.items() if v is not None and v != config.get(k)}
        if "scale" not in changed:
            # the file describes this very model: anything it does not fill would run on random weights
            # (but the head, when it was rebuilt for another class count)
            head = f"model.{len(model.records) - 1}." if "nc" in changed else None
            report.require_fit("the checkpoint does not match the config it carries (corrupt or edited?)", head)
        model.name = str(ckpt.extra.get("name") or model.name)
        names = ckpt.extra.get("names")
        if isinstance(names, list) and len(names) == len(model.names):
            model.names = dict(enumerate(map(str, names)))
        return model


def checkpoint_config(ckpt: Checkpoint, plugins: tuple[str, ...] = (), trust_plugins: bool = False) -> dict[str, Any]:
    """The model config a checkpoint carries, its plugin list reduced to what may be imported."""
    if ckpt.config is None:
        raise ConfigError("checkpoint carries no model config; build with Model(cfg) and call .load(path)", file=ckpt.path)
    config = dict(ckpt.config)
    allowed = allowed_plugins(ckpt, tuple(plugins), trust_plugins)
    if allowed or "plugins" in config:  # the stored names are replaced by what may be imported
        config["plugins"] = allowed
    return config


def _plugin_key(spec: str) -> str:
    """What a plugin is known by: a file's name (folders differ between machines) or a module name."""
    return Path(spec).name if spec.endswith(".py") else spec


def allowed_plugins(ckpt: Checkpoint, given: tuple[str, ...], trust: bool) -> list[str]:
    """The plugins a checkpoint's config names, as they may be imported: each one the user gave
    (``given``), or, with ``trust``, the named file looked up beside the checkpoint and its run folder.
    A checkpoint is data, so a named plugin that is neither is refused with one line."""
    named: list[str] = []
    for spec in list((ckpt.config or {}).get("plugins") or []) + list(ckpt.plugins):
        if not isinstance(spec, str):
            raise ConfigError(f"'plugins' must be a list of .py files or module names, got {spec!r}", file=ckpt.path)
        if spec not in named:
            named.append(spec)
    by_key = {_plugin_key(g): g for g in given}
    allowed, refused = [], []
    for spec in named:
        if _plugin_key(spec) in by_key:
            allowed.append(by_key[_plugin_key(spec)])
        elif trust:
            allowed.append(_locate_plugin(spec, Path(ckpt.path)))
        else:
            refused.append(spec)
    if refused:
        raise CheckpointError(
            f"{ckpt.path}: its config names plugin(s) {', '.join(refused)}, and loading a checkpoint never imports "
            "code; give each with --plugin FILE_OR_MODULE (Python: plugins=...), or pass --trust-plugins "
            "(trust_plugins=True) to import what the checkpoint names")
    return allowed


def _locate_plugin(spec: str, ckpt_path: Path) -> str:
    """A trusted checkpoint's plugin file: as written if absolute, else beside the checkpoint, in its
    run folder (``RUN/weights/last.pt`` -> ``RUN``), else relative to the current folder."""
    if not spec.endswith(".py") or Path(spec).is_absolute():
        return spec
    for folder in (ckpt_path.parent, ckpt_path.parent.parent):
        for candidate in (folder / spec, folder / Path(spec).name):
            if candidate.is_file():
                return str(candidate.resolve())
    return spec


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
