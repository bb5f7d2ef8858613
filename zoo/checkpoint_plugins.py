"""Which of the plugins a checkpoint's config names may be imported, and the config to build from.

Reading a checkpoint never imports code: a plugin it names is imported only when the caller gives
it (matched by file or module name) or trusts the checkpoint. Used by :class:`zoo.model.Model` and
the training engine's resume.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.checkpoint import Checkpoint
from zoo.errors import CheckpointError, ConfigError

__all__ = ["checkpoint_config", "allowed_plugins"]


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
    """A trusted checkpoint's plugin file: the run's own copy (``RUN/plugins``, written by zoo train;
    ``RUN/weights/last.pt`` -> ``RUN``), else beside the checkpoint or in its run folder, else the path
    as written (absolute, or relative to the current folder)."""
    if not spec.endswith(".py"):
        return spec
    run = ckpt_path.parent.parent
    for folder in (run / "plugins", ckpt_path.parent, run):
        for candidate in (folder / Path(spec).name, folder / spec):
            if candidate.is_file():
                return str(candidate.resolve())
    return spec
