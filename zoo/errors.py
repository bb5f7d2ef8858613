"""Exceptions for user input. The CLI turns these into one line and exit code 2."""
from __future__ import annotations


class ZooError(Exception):
    """Base class for errors caused by user input (configs, checkpoints, data, plugins)."""


class ConfigError(ZooError, ValueError):
    """A model config is wrong. ``str()`` names the file, the row and the fix."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None, section: str | None = None):
        self.message = message
        self.file = file
        self.row = row
        self.section = section
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.row is not None:
            where.append(f"row {self.row}" + (f" ({self.section})" if self.section else ""))
        return (": ".join(where) + ": " if where else "") + self.message

    def at(self, *, file: str | None = None, row: int | None = None, section: str | None = None) -> "ConfigError":
        """Return a copy with the location filled in (keeps any location already set)."""
        return ConfigError(
            self.message,
            file=self.file or file,
            row=self.row if self.row is not None else row,
            section=self.section or section,
        )


class PluginError(ZooError):
    """A plugin could not be found or failed to import."""


class CheckpointError(ZooError):
    """A checkpoint could not be read, or it tried to run code while being unpickled."""


class DataError(ZooError):
    """A dataset is missing, empty or malformed beyond what can be skipped."""


class TrainSetupError(ZooError):
    """A training / validation option cannot be honoured (device, freeze pattern, resume target, a bad value)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; ``str()`` says where it stopped and how to resume."""
