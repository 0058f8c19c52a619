"""The kernel a notebook runs in: this Python (``sys.executable``), whatever kernels Jupyter would find under the
name "python3". Jupyter looks in ``JUPYTER_PATH`` and the user's own kernels before the running environment's, so a
user-level "python3" of another Python (a conda base, a ``pip --user`` install) would run the notebook without
moa_lab; a sweep's points (and the tests' notebooks) run where the sweep runs instead."""

from __future__ import annotations

import sys


def this_python_spec():
    """A kernel spec that starts ipykernel in this Python."""
    from jupyter_client.kernelspec import KernelSpec

    return KernelSpec(
        argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        display_name=f"Python {sys.version_info.major} (this environment)",
        language="python",
        metadata={"debugger": True},
    )


def kernel_manager_class(base=None):
    """A kernel manager class (for papermill's ``kernel_manager_class=``) whose kernels run in this Python,
    derived from ``base`` (default: jupyter_client's ``AsyncKernelManager``)."""
    if base is None:
        from jupyter_client.manager import AsyncKernelManager as base

    class ThisPython(base):
        @property
        def kernel_spec(self):
            if self._kernel_spec is None:
                self._kernel_spec = this_python_spec()
            return self._kernel_spec

    return ThisPython
