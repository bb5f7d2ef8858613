"""Blocks and model families. Nothing here needs importing first: :data:`zoo.registry.MODULES` and
:data:`zoo.registry.KEY_MAPS` import the family files (``zoo.registry.FAMILIES``) on first lookup."""
