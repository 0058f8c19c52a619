"""``moa_lab.widgets``: the playground panel under its first name (the code is in :mod:`moa_lab.views.widgets`)."""

from moa_lab.views.widgets import MAX_LAYERS, SYSTEM_PROMPTS, Playground

__all__ = ["MAX_LAYERS", "SYSTEM_PROMPTS", "Playground"]
