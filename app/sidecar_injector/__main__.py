"""``python -m sidecar_injector`` is the ``sidecar-injector`` command."""

import sys

from sidecar_injector.cli.commands import main

sys.exit(main())
