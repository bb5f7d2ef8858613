"""The package version, in a module of its own so checkpoints can stamp it without importing zoo."""
__version__ = "0.1.0"
