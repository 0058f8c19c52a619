import sys

from moa_lab.cli import main

sys.exit(main())
