"""``python -m services.cli`` runs the ``ecstatic`` command."""

import sys

from services.cli.main import main

sys.exit(main())
