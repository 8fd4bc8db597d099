"""``python -m sims`` runs the ``pgverify`` command line."""

import sys

from sims.cli import entry

sys.exit(entry())
