"""MoA as a model: recipes served as ``moa/NAME`` on an OpenAI-compatible ``/v1/chat/completions``
(``moa-lab serve --recipe NAME=FILE``), with conversations, streaming and every run's record."""

from moa_lab.serve._endpoint import PREFIX, MoAEndpoint
from moa_lab.serve._recipes import load_recipes

__all__ = ["MoAEndpoint", "PREFIX", "load_recipes"]
