"""``python -m dlhisto_core.cli <step>``: the same as ``dlhisto <step>``."""

import sys

from .commands import main

sys.exit(main())
