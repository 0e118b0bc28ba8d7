"""``python -m app`` is the ``sidecar-injector`` command."""

import sys

from app.cli import main

sys.exit(main())
