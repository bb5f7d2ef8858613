"""zoo: a YAML-configured vision model zoo."""
from zoo.errors import CheckpointError, ConfigError, DataError, PluginError, ZooError
from zoo.model import Model
from zoo.registry import MODULES, register
from zoo.version import __version__

__all__ = ["Model", "register", "MODULES", "ConfigError", "CheckpointError", "DataError", "PluginError", "ZooError"]
