"""python -m engine.cli: the same as `cxe`."""

import sys

from engine.cli import main

sys.exit(main())
