"""zoo: a YAML-configured vision model zoo."""
from zoo.errors import CheckpointError, ConfigError, DataError, PluginError, ZooError
from zoo.model import Model
from zoo.registry import MODULES, register

__all__ = ["Model", "register", "MODULES", "ConfigError", "CheckpointError", "DataError", "PluginError", "ZooError"]
__version__ = "0.1.0"
