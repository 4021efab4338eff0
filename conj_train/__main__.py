"""``python -m conj_train`` runs the ``conj`` CLI."""

import sys

from conj_train.cli import main

sys.exit(main())
