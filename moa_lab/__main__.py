"""``python -m moa_lab``: the CLI (``moa-lab``)."""

import sys

from moa_lab._cli import main

if __name__ == "__main__":  # importing this module (a documentation tool inspecting the package) runs nothing
    sys.exit(main())
