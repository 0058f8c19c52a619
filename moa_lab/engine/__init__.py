"""The embedded inference server: the bundled models (and yours) served on 127.0.0.1 by llama.cpp, OpenAI-compatible.

- :mod:`~moa_lab.engine._local`: the server as a resource of this process (``LocalServer``: started lazily, reused,
  watched, stopped at exit), the bundled models' files.
- :mod:`~moa_lab.serve._front`: the front (``moa-lab serve``): one port, admission, aliases, request checks.
- :mod:`~moa_lab.engine._worker`: one llama.cpp process per model, its weights loaded once.
- :mod:`~moa_lab.engine._supervisor`: the workers started, watched (exits and hangs) and started again.
- :mod:`~moa_lab.engine._policy`: who runs and on how many cores (threads follow the work).
- :mod:`~moa_lab.engine._models`: your own GGUF models, checked before anything starts.

Only ``local`` and ``models`` are imported here: the front needs uvicorn and starlette, loaded by ``moa-lab serve``.
"""

from moa_lab.engine._local import (
    BUNDLED_MODELS,
    MODEL_FILES,
    REFERENCE_ALIASES,
    LocalServer,
    LocalServerError,
    default_server,
    model_path,
)
from moa_lab.engine._models import ModelSpec, absolute_env
from moa_lab.engine._policy import default_threads

__all__ = [
    "BUNDLED_MODELS",
    "LocalServer",
    "LocalServerError",
    "MODEL_FILES",
    "ModelSpec",
    "REFERENCE_ALIASES",
    "absolute_env",
    "default_server",
    "default_threads",
    "model_path",
]
