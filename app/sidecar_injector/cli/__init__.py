"""The ``sidecar-injector`` command: the outermost edge (``python -m sidecar_injector`` runs :func:`main`)."""

from sidecar_injector.cli.commands import main
from sidecar_injector.cli.parser import build_parser, settings_from

# build_parser and settings_from: tests/test_chart.py imports them from here
__all__ = ["build_parser", "main", "settings_from"]
