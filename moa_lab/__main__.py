import sys

from moa_lab._cli import main

sys.exit(main())
