"""``python -m amad_fast.bench`` runs ``amad-fast bench``."""
import sys

from amad_fast.bench.command import main

sys.exit(main())
