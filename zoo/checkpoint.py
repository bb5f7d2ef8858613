"""Safe checkpoint reading, foreign key layouts and the load report.

Three kinds of file load without running anything they contain:

* zoo checkpoints (``{"model_state": ..., "yaml": ...}``) and plain state dicts, read with
  ``torch.load(weights_only=True)``;
* Ultralytics checkpoints, whose ``model`` is a pickled module tree naming ``ultralytics.*``
  classes. A restricted unpickler turns every module class into an inert stand-in that only
  stores its ``__dict__``, rebuilds tensors, and refuses any other callable (``os.system``,
  ``builtins.eval``, ...) with a :class:`~zoo.errors.CheckpointError`. Ultralytics need not be
  installed;
* foreign layouts (timm, MobileSAM, ...) through registered :class:`KeyMap` s.
"""
from __future__ import annotations

import collections
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from zoo.errors import CheckpointError
from zoo.registry import KEY_MAPS

if TYPE_CHECKING:
    from zoo.model import Model

__all__ = ["Checkpoint", "LoadReport", "read_checkpoint", "load_weights"]


# --------------------------------------------------------------------------- restricted unpickling
_STUB_PREFIXES = ("ultralytics.", "torch.nn.modules.", "pathlib.", "zoo.")
_STUB_NAMES = {("types", "SimpleNamespace"), ("argparse", "Namespace")}
_SAFE_CALLABLES: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("builtins", "object"): object,
}


class _Inert:
    """Stand-in for a pickled class: keeps the state it is given and can do nothing else."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_init_args"] = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)


def _copyreg_reconstructor(cls: type, base: type, state: Any) -> Any:
    if not (isinstance(cls, type) and issubclass(cls, _Inert)):
        raise CheckpointError(f"refusing to reconstruct {cls!r} from a checkpoint")
    return cls.__new__(cls)


_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class _RestrictedUnpickler(pickle.Unpickler):
    _stubs: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)  # protocol-2 pickles use Python 2 names
        key = (module, name)
        if key in _SAFE_CALLABLES:
            return _SAFE_CALLABLES[key]
        if key == ("copyreg", "_reconstructor"):
            return _copyreg_reconstructor
        if key == ("_codecs", "encode"):
            return lambda text, encoding="latin1": text.encode(encoding)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith(_STUB_PREFIXES) or key in _STUB_NAMES:
            if key not in self._stubs:
                self._stubs[key] = type(name, (_Inert,), {"__module__": f"zoo.checkpoint.inert.{module}"})
            return self._stubs[key]
        raise CheckpointError(
            f"refusing to load: the checkpoint asks to call {module}.{name} while unpickling; "
            "zoo only rebuilds tensors and module trees (a malicious or foreign file?)"
        )


class _RestrictedPickleModule:
    """What ``torch.load(pickle_module=...)`` needs: an ``Unpickler`` class and ``load``."""

    Unpickler = _RestrictedUnpickler
    __name__ = "zoo_restricted_pickle"

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(file, **kwargs).load()


def _module_tree_state(obj: Any, prefix: str = "", out: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """State dict of an inert module tree, following ``_parameters``/``_buffers``/``_modules``."""
    out = {} if out is None else out
    d = getattr(obj, "__dict__", {})
    for name, p in (d.get("_parameters") or {}).items():
        if p is not None:
            out[prefix + name] = p.detach() if isinstance(p, torch.Tensor) else p
    skip = d.get("_non_persistent_buffers_set") or set()
    for name, b in (d.get("_buffers") or {}).items():
        if b is not None and name not in skip:
            out[prefix + name] = b
    for name, child in (d.get("_modules") or {}).items():
        if child is not None:
            _module_tree_state(child, f"{prefix}{name}.", out)
    return out


# --------------------------------------------------------------------------- reading
def _renamed_classifier_rows(config: Any, state: Mapping[str, torch.Tensor]) -> Any:
    """zoo checkpoints written by 0.1.0 and earlier called zoo's own classifier head ``Classify``, the name that now
    means Ultralytics' head; a ``Classify`` row whose weights are zoo's (``model.I.fc.*``, where
    Ultralytics' has ``linear``) is renamed ``ClassifierHead`` so the checkpoint builds what it was."""
    if not isinstance(config, Mapping):
        return config
    config = dict(config)
    index = 0
    for section in ("backbone", "head"):
        rows = config.get(section)
        if not isinstance(rows, list):
            continue
        renamed = []
        for row in rows:
            if (isinstance(row, list) and len(row) == 4 and row[2] == "Classify"
                    and f"model.{index}.fc.weight" in state):
                row = [row[0], row[1], "ClassifierHead", row[3]]
            renamed.append(row)
            index += 1
        config[section] = renamed
    return config


@dataclass
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    config: dict | None
    kind: str  # "zoo", "state_dict", "ultralytics"
    path: str  # the file read, or "<state dict>"
    plugins: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # weights_only refuses module trees; rebuild them inertly instead
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickleModule)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None

    if isinstance(obj, Mapping) and "model_state" in obj:
        extra = {k: v for k, v in obj.items() if k not in ("model_state", "yaml", "plugins")}
        state = dict(obj["model_state"])
        return Checkpoint(state, _renamed_classifier_rows(obj.get("yaml"), state), "zoo", str(path),
                          list(obj.get("plugins") or []), extra)
    if isinstance(obj, Mapping) and isinstance(obj.get("ema") or obj.get("model"), _Inert):
        tree = obj.get("ema") or obj.get("model")
        config = tree.__dict__.get("yaml")
        extra = {k: obj[k] for k in ("epoch", "version", "date") if k in obj}
        # what a run trained there knows besides its weights: class names, training image size
        names = tree.__dict__.get("names")
        if isinstance(names, Mapping) and all(isinstance(k, int) and isinstance(v, str) for k, v in names.items()):
            extra["names"] = dict(names)
        train_args = obj.get("train_args")
        imgsz = train_args.get("imgsz") if isinstance(train_args, Mapping) else None
        if isinstance(imgsz, int) and not isinstance(imgsz, bool) and imgsz > 0:
            extra["imgsz"] = imgsz
        return Checkpoint(_module_tree_state(tree), dict(config) if isinstance(config, Mapping) else None,
                          "ultralytics", str(path), [], extra)
    for key in (None, "state_dict", "model", "module"):
        candidate = obj if key is None else (obj.get(key) if isinstance(obj, Mapping) else None)
        if _is_state_dict(candidate):
            return Checkpoint(dict(candidate), None, "state_dict", str(path))
    raise CheckpointError(f"{path}: no state dict found (top-level keys: {list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__})")


# --------------------------------------------------------------------------- loading
@dataclass
class LoadReport:
    path: str  # the file read, or "<state dict>"
    layout: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def unfit(self) -> int:
        """Tensors of the model the file did not give a value for (missing or of another shape)."""
        return len(self.missing) + len(self.mismatched)

    def require_fit(self, consequence: str, allowed_prefix: str | None = None) -> None:
        """Refuse a load that would leave some of the model at its random initial values (except
        under ``allowed_prefix``, e.g. a head rebuilt for another class count)."""
        def counted(key: str) -> bool:
            return allowed_prefix is None or not key.startswith(allowed_prefix)

        mismatched = [k for k, _, _ in self.mismatched if counted(k)]
        missing = [k for k in self.missing if counted(k)]
        if mismatched or missing:
            total = len(self.loaded) + self.unfit
            first = mismatched[:2] + missing[:2]
            raise CheckpointError(
                f"{self.path}: {len(mismatched) + len(missing)} of {total} tensors do not fit the model "
                f"({len(mismatched)} shape-mismatched, {len(missing)} missing; e.g. {', '.join(first[:3])}); "
                f"{consequence}")

    def __str__(self) -> str:
        total = len(self.loaded) + len(self.missing) + len(self.mismatched)
        lines = [f"Transferred {len(self.loaded)}/{total} tensors from {self.path} (layout: {self.layout}); "
                 f"missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
                 f"shape-mismatched {len(self.mismatched)}, skipped {len(self.skipped)}"]

        def show(title: str, items: list[str]) -> None:
            if items:
                more = f" ... (+{len(items) - 8} more)" if len(items) > 8 else ""
                lines.append(f"  {title}: " + ", ".join(items[:8]) + more)

        show("missing", self.missing)
        show("unexpected", self.unexpected)
        show("shape-mismatched", [f"{k} {list(a)} -> {list(b)}" for k, a, b in self.mismatched])
        show("skipped", [f"{k} ({why})" for k, why in self.skipped.items()])
        return "\n".join(lines)


def _as_checkpoint(src: str | Path | Checkpoint | Mapping[str, torch.Tensor]) -> Checkpoint:
    if isinstance(src, Checkpoint):
        return src
    if isinstance(src, Mapping):
        if not _is_state_dict(src):
            raise CheckpointError("a state dict must map names to tensors")
        return Checkpoint(dict(src), None, "state_dict", "<state dict>")
    return read_checkpoint(src)


def _nonfinite(state: Mapping[str, torch.Tensor], model: "Model") -> list[str]:
    """Keys of learned values (parameters, normalisation statistics) that hold NaN or inf. Other
    buffers may hold inf on purpose (e.g. masked anchor cells), so they are not judged."""
    learned = {name for name, _ in model.named_parameters()}
    return [k for k, v in state.items()
            if (k in learned or k.endswith(("running_mean", "running_var"))) and v.is_floating_point()
            and not bool(torch.isfinite(v).all())]


def load_weights(model: "Model", src: str | Path | Checkpoint | Mapping[str, torch.Tensor], strict: bool = False,
                 verbose: bool = True) -> LoadReport:
    """Load ``src`` into ``model`` by name; shape-mismatched tensors are left at their init values."""
    ckpt = _as_checkpoint(src)
    state = ckpt.state_dict
    own = model.state_dict()
    layout = {"zoo": "zoo checkpoint", "state_dict": "state dict", "ultralytics": "Ultralytics checkpoint"}[ckpt.kind]
    skipped: dict[str, str] = {}
    native = sum(k in own for k in state) >= max(1, len(state) // 2)
    if not native:
        for km in KEY_MAPS:
            if km.detect(state):
                state, skipped = km.convert(dict(state), model)
                layout = f"{layout}, {km.name} keys"
                break
    report = LoadReport(ckpt.path, layout, skipped=dict(skipped))
    to_load = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            to_load[key] = value
            report.loaded.append(key)
    report.missing = [k for k in own if k not in state]
    broken = _nonfinite(to_load, model)
    if broken:
        raise CheckpointError(
            f"{ckpt.path}: {len(broken)} of {len(to_load)} tensors hold NaN or inf values (e.g. {', '.join(broken[:3])}); "
            "the file is corrupt or comes from a diverged run, so zoo will not load it")
    if strict and not report.ok:
        raise CheckpointError(f"strict load failed:\n{report}")
    model.load_state_dict(to_load, strict=False)
    if verbose:
        print(report)
    return report
