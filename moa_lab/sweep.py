"""``moa_lab.sweep``: the sweeps' API under its first name (the code is in :mod:`moa_lab.sweeps`)."""

from moa_lab.sweeps import *  # noqa: F403 - the same public names
from moa_lab.sweeps import __all__  # noqa: F401
