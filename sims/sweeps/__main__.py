"""``python -m sims.sweeps ARGS``: ``pgverify sweep ARGS``."""

import sys

from sims.sweeps.cli import main

sys.exit(main())
