"""``python -m sims`` runs the ``pgverify`` command line."""

import sys

from sims.cli import main

sys.exit(main())
