"""`python -m orchestrator` is `splitsweep`."""

import sys

from .cli import main

sys.exit(main())
