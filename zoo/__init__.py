"""zoo: a YAML-configured vision model zoo."""
from zoo.config import list_models
from zoo.errors import CheckpointError, ConfigError, DataError, PluginError, ZooError
from zoo.version import __version__

__all__ = ["Model", "Results", "SamPredictor", "SamAutomaticMaskGenerator", "load_exported", "register", "MODULES", "list_models", "ConfigError", "CheckpointError", "DataError", "PluginError",
           "ZooError"]

# loaded on first use (PEP 562): they import torch, which `zoo --help` and `zoo list`'s cfg names never need
_LAZY = {"Model": "zoo.model", "Results": "zoo.results", "SamPredictor": "zoo.sam_predictor",
         "SamAutomaticMaskGenerator": "zoo.automatic_masks", "load_exported": "zoo.export",
         "register": "zoo.registry", "MODULES": "zoo.registry"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
