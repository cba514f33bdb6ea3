"""``python -m amad_fast`` runs the ``amad-fast`` command line (see :mod:`amad_fast.cli`)."""
import sys

from amad_fast.cli import main

sys.exit(main())
