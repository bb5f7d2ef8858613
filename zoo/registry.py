"""Registries: one :class:`Registry` class, one instance per kind of member.

Modeled on mmengine's Registry: a duplicate name raises, an unknown name says what was asked for and
suggests close matches, and each instance knows which modules define its built-in members and
imports them itself on first lookup, so nothing depends on a caller having imported ``zoo.nn``.

Instances: :data:`MODULES` (YAML module names -> classes + wiring, for the builder) and
:data:`KEY_MAPS` (foreign checkpoint layouts, for weight loading) live here;
``zoo.engine.tasks.base.TASKS`` and ``zoo.engine.tasks.heads.HEADS`` in the engine. ``nn.X`` resolves
to ``torch.nn.X`` without registration. Plugins (a ``.py`` file, an importable module, or a
``zoo.modules`` entry point) register their own blocks with the same decorator.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterator, Mapping, TypeVar

import torch
import torch.nn as nn

from zoo.errors import ConfigError, PluginError
from zoo.wiring import TORCH_WIRINGS, Wiring, passthrough

if TYPE_CHECKING:
    from zoo.model import Model

__all__ = ["Registry", "Entry", "KeyMap", "MODULES", "KEY_MAPS", "register", "load_plugins",
           "load_entry_point_plugins", "FAMILIES"]

T = TypeVar("T")

# The files that define zoo's blocks and the foreign key maps of their families. A new family is a
# new file under zoo/nn plus one entry here.
FAMILIES = ("zoo.nn.common", "zoo.nn.yolov5", "zoo.nn.yolov8", "zoo.nn.yolo_detect", "zoo.nn.ghost",
            "zoo.nn.yolov10", "zoo.nn.yolo11", "zoo.nn.yolo12", "zoo.nn.yolov9", "zoo.nn.tiny_vit",
            "zoo.nn.mobilevit", "zoo.nn.mobilevit_v2", "zoo.nn.classifier_head", "zoo.nn.yolo_classify",
            "zoo.nn.unsupported", "zoo.nn.rtdetr", "zoo.nn.rtdetr_decoder", "zoo.nn.sam", "zoo.nn.timm_keys",
            "zoo.nn.sam_keys")


class Registry(Generic[T]):
    """A name -> member table.

    ``members`` names the modules whose import registers the built-in members; they are imported
    on the first lookup (``get``, ``in``, iteration, ``len``), never on registration. ``wrap(name,
    obj, source, **fields)`` turns what ``register`` is given into the stored member (default: the
    object itself); ``fallback(name)`` may resolve names nobody registered (``nn.X`` for modules).

    Example::

        @MODULES.register(wiring=in_out(repeats_at=2))
        class MyBlock(nn.Module): ...

        KEY_MAPS.register(KeyMap("timm TinyViT", detect, convert))
    """

    def __init__(self, name: str, members: tuple[str, ...] = (),
                 wrap: Callable[..., T] | None = None, fallback: Callable[[str], T | None] | None = None,
                 candidates: Callable[[], list[str]] | None = None, unknown_hint: str = "") -> None:
        self.name = name
        self._members = members
        self._members_loaded = not members
        self._wrap = wrap
        self._fallback = fallback
        self._candidates = candidates
        self._unknown_hint = unknown_hint
        self._items: dict[str, T] = {}
        self._refused: dict[str, str] = {}  # names known and deliberately not supported -> why
        self._sources: dict[str, str] = {}
        self._plugin_source: str | None = None  # set while a plugin is being imported

    # ------------------------------------------------------------------ registering
    def register(self, obj: Any = None, *, name: str | None = None, **fields: Any) -> Any:
        """``@reg.register``, ``@reg.register(name=..., **fields)``, ``@reg.register("Name")`` or
        ``reg.register(obj)``. The key is ``name``, else ``obj.name`` (a string), else ``obj.__name__``."""
        if isinstance(obj, str):  # @register("Name")
            name, obj = obj, None

        def decorator(target: Any) -> Any:
            key = name or (target.name if isinstance(getattr(target, "name", None), str) else target.__name__)
            module = getattr(target, "__module__", "") or ""
            source = self._plugin_source or ("zoo" if module.startswith("zoo.") or module == "zoo" else module)
            member = self._wrap(key, target, source, **fields) if self._wrap else target
            self.add(key, member, source)
            return target

        return decorator if obj is None else decorator(obj)

    def add(self, key: str, member: T, source: str = "zoo") -> T:
        if key in self._items:
            raise KeyError(f"{self.name} registry: '{key}' is already registered by {self._sources[key]} "
                           f"({_describe(self._items[key])}); pick another name")
        self._items[key] = member
        self._sources[key] = source
        return member

    def refuse(self, name: str, reason: str) -> None:
        """Mark ``name`` as known but unsupported: looking it up raises ``reason`` (one line) instead of
        "unknown ... did you mean". A member registered under that name later (a plugin's) wins."""
        self._refused[name] = reason

    def refusal(self, name: str) -> str | None:
        """Why ``name`` is refused, or None when it is not (registered members are never refused)."""
        self._load_members()
        return None if name in self._items else self._refused.get(name)

    # ------------------------------------------------------------------ looking up
    def _load_members(self) -> None:
        if not self._members_loaded:
            self._members_loaded = True  # first: a member's import may look things up
            for module in self._members:
                importlib.import_module(module)

    def get(self, name: str) -> T:
        """Resolve ``name``; an unknown one raises :class:`ConfigError` (no location) with suggestions."""
        self._load_members()
        if name in self._items:
            return self._items[name]
        found = self._fallback(name) if self._fallback else None
        if found is not None:
            return found
        if name in self._refused:
            raise ConfigError(f"{name}: {self._refused[name]}")
        candidates = list(self._items) + (self._candidates() if self._candidates else [])
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else (
            f"; {self._unknown_hint}" if self._unknown_hint else f"; known: {', '.join(sorted(self._items))}")
        raise ConfigError(f"unknown {_singular(self.name)} '{name}'{hint}")

    def source_of(self, name: str) -> str:
        self._load_members()
        return self._sources[name]

    def __contains__(self, name: object) -> bool:
        self._load_members()
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        self._load_members()
        return iter([self._items[k] for k in sorted(self._items)])

    def __len__(self) -> int:
        self._load_members()
        return len(self._items)

    def names(self) -> list[str]:
        self._load_members()
        return sorted(self._items)

    def _import_as_plugin(self, label: str, importer: Callable[[], object]) -> None:
        self._load_members()  # a plugin's blocks may build on zoo's: they exist before it runs
        self._plugin_source = label
        try:
            importer()
        except ConfigError:
            raise
        except Exception as exc:  # a plugin's own bug: say which plugin, keep the cause
            raise PluginError(f"plugin '{label}' failed to import: {type(exc).__name__}: {exc}") from exc
        finally:
            self._plugin_source = None


def _singular(name: str) -> str:
    return name[:-1] if name.endswith("s") else name


def _describe(member: Any) -> str:
    cls = getattr(member, "cls", member)
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', type(cls).__name__)}"


# --------------------------------------------------------------------------- modules
@dataclass(frozen=True)
class Entry:
    """One registered module: the class, how the builder wires it, and who registered it."""

    name: str
    cls: type
    wiring: Wiring
    registered_by: str  # "zoo", "torch.nn" or the plugin that registered it

    def signature(self) -> str:
        try:
            sig = inspect.signature(self.cls).replace(return_annotation=inspect.Signature.empty)
            # postponed annotations are strings; print them bare
            return f"{self.name}{sig}".replace("'", "")
        except (TypeError, ValueError):  # some builtins have no introspectable signature
            return f"{self.name}(...)"


def _module_entry(name: str, cls: type, source: str, wiring: Wiring | None = None) -> Entry:
    return Entry(name, cls, wiring or passthrough(), source)


def _torch_module(name: str) -> Entry | None:
    if name.startswith("nn."):
        attr = getattr(nn, name[3:], None)
        if isinstance(attr, type) and issubclass(attr, nn.Module):
            return Entry(name, attr, TORCH_WIRINGS.get(name[3:], passthrough()), "torch.nn")
    return None


MODULES: Registry[Entry] = Registry(
    "modules", members=FAMILIES, wrap=_module_entry, fallback=_torch_module,
    candidates=lambda: [f"nn.{n}" for n in dir(nn) if n[:1].isupper()],
    unknown_hint="register it with @zoo.register or load its plugin with --plugin / 'plugins:'")
register = MODULES.register


# --------------------------------------------------------------------------- foreign key layouts
@dataclass(frozen=True)
class KeyMap:
    """A foreign state-dict layout: how to recognise it and how to rename it to zoo keys.

    ``convert(state, model)`` returns ``(zoo_state, skipped)`` where ``skipped`` maps each source key
    deliberately left out to the reason (reported, never silently dropped).
    """

    name: str
    detect: Callable[[Mapping[str, torch.Tensor]], bool]
    convert: Callable[[dict[str, torch.Tensor], "Model"], tuple[dict[str, torch.Tensor], dict[str, str]]]


KEY_MAPS: Registry[KeyMap] = Registry("key maps", members=FAMILIES)


_loaded_plugins: set[str] = set()


def load_plugins(specs: list[str] | tuple[str, ...], base_dir: Path | None = None) -> None:
    """Import user plugins so their ``@register`` decorators run.

    Each spec is a path to a ``.py`` file (relative to ``base_dir`` when given, e.g. the YAML's
    folder) or a dotted module name. Importing the same plugin twice is a no-op.
    """
    for spec in specs:
        path = Path(spec)
        if spec.endswith(".py"):
            if not path.is_absolute() and base_dir is not None and (base_dir / path).exists():
                path = base_dir / path
            path = path.resolve()
            if not path.exists():
                raise PluginError(f"plugin file '{spec}' not found (looked in {path.parent})")
            # keyed by name and content: a run folder's copy of a plugin already imported from its
            # original place is the same plugin (importing it again would register its blocks twice)
            key = f"{path.name}:{hashlib.sha256(path.read_bytes()).hexdigest()}"
            if key in _loaded_plugins:
                continue
            mod_name = f"zoo_plugin_{path.stem}_{abs(hash(key)) % 10**8}"

            def _import_file(path: Path = path, mod_name: str = mod_name) -> None:
                file_spec = importlib.util.spec_from_file_location(mod_name, path)
                module = importlib.util.module_from_spec(file_spec)  # type: ignore[arg-type]
                sys.modules[mod_name] = module
                file_spec.loader.exec_module(module)  # type: ignore[union-attr]

            MODULES._import_as_plugin(path.name, _import_file)
        else:
            key = spec
            if key in _loaded_plugins:
                continue
            if importlib.util.find_spec(spec) is None:
                raise PluginError(f"plugin module '{spec}' is not importable (not on sys.path?)")
            MODULES._import_as_plugin(spec, lambda spec=spec: importlib.import_module(spec))
        _loaded_plugins.add(key)


_scanned_groups: set[str] = set()


def load_entry_point_plugins(group: str = "zoo.modules", rescan: bool = False) -> None:
    """Import every installed package that declares an entry point in ``group``.

    The installed distributions are scanned once per process and group (a scan reads every
    package's metadata, ~10 ms, which would otherwise be paid by every model build); ``rescan=True``
    looks again, e.g. after installing a plugin package into a running session.
    """
    if group in _scanned_groups and not rescan:
        return
    _scanned_groups.add(group)
    for ep in entry_points(group=group):
        key = f"entry-point:{ep.name}={ep.value}"
        if key in _loaded_plugins:
            continue
        MODULES._import_as_plugin(f"{ep.name} (entry point)", ep.load)
        _loaded_plugins.add(key)
