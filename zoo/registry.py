"""Module registry: YAML module names -> classes, with the wiring the builder needs.

Modeled on mmengine's Registry: one small table, a duplicate name raises, an unknown name says
where it was asked for and suggests close matches. ``nn.X`` resolves to ``torch.nn.X`` without
registration. Plugins (a ``.py`` file, an importable module, or a ``zoo.modules`` entry point)
register their own blocks with the same decorator; zoo's code is never edited.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, Iterator

import torch.nn as nn

from zoo.errors import ConfigError, PluginError
from zoo.wiring import Wiring, passthrough

__all__ = ["Entry", "Registry", "MODULES", "register", "load_plugins", "load_entry_point_plugins"]


@dataclass(frozen=True)
class Entry:
    """One registered module: the class, how the builder wires it, and who registered it."""

    name: str
    cls: type
    wiring: Wiring
    source: str  # "zoo", "torch.nn" or the plugin that registered it

    def signature(self) -> str:
        try:
            sig = inspect.signature(self.cls).replace(return_annotation=inspect.Signature.empty)
            # postponed annotations are strings; print them bare
            return f"{self.name}{sig}".replace("'", "")
        except (TypeError, ValueError):  # some builtins have no introspectable signature
            return f"{self.name}(...)"


class Registry:
    """A name -> :class:`Entry` table.

    Example::

        @register(wiring=io(repeats=True))
        class MyBlock(nn.Module): ...
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._entries: dict[str, Entry] = {}
        self._plugin_source: str | None = None  # set while a plugin is being imported

    def register(self, name: str | None = None, *, wiring: Wiring | None = None) -> Callable[[type], type]:
        def decorator(cls: type) -> type:
            key = name or cls.__name__
            if key in self._entries:
                prev = self._entries[key]
                raise KeyError(
                    f"{self.name} registry: '{key}' is already registered by {prev.source} "
                    f"({prev.cls.__module__}.{prev.cls.__qualname__}); pick another name"
                )
            source = self._plugin_source or ("zoo" if cls.__module__.startswith("zoo.") else cls.__module__)
            self._entries[key] = Entry(key, cls, wiring or passthrough(), source)
            return cls

        return decorator

    def get(self, name: str) -> Entry:
        """Resolve ``name``; raises :class:`ConfigError` (no location) with suggestions if unknown."""
        if name in self._entries:
            return self._entries[name]
        if name.startswith("nn."):
            attr = getattr(nn, name[3:], None)
            if isinstance(attr, type) and issubclass(attr, nn.Module):
                from zoo.wiring import TORCH_WIRINGS

                return Entry(name, attr, TORCH_WIRINGS.get(name[3:], passthrough()), "torch.nn")
        candidates = list(self._entries) + [f"nn.{n}" for n in dir(nn) if n[:1].isupper()]
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else (
            "; register it with @zoo.register or load its plugin with --plugin / 'plugins:'"
        )
        raise ConfigError(f"unknown module '{name}'{hint}")

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)

    def _import_as_plugin(self, label: str, importer: Callable[[], object]) -> None:
        self._plugin_source = label
        try:
            importer()
        except ConfigError:
            raise
        except Exception as exc:  # a plugin's own bug: say which plugin, keep the cause
            raise PluginError(f"plugin '{label}' failed to import: {type(exc).__name__}: {exc}") from exc
        finally:
            self._plugin_source = None


MODULES = Registry("modules")
register = MODULES.register

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
            key = str(path)
            if key in _loaded_plugins:
                continue
            if not path.exists():
                raise PluginError(f"plugin file '{spec}' not found (looked in {path.parent})")
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
