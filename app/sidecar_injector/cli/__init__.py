"""The ``sidecar-injector`` command: the outermost edge (``python -m sidecar_injector`` runs :func:`main`)."""

from sidecar_injector.cli.commands import main

__all__ = ["main"]
