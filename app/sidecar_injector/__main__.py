"""``python -m sidecar_injector`` is the ``sidecar-injector`` command."""

import sys

from sidecar_injector.cli import main

sys.exit(main())
