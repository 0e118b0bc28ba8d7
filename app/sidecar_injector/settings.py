"""Transitional alias of the old flat module ``sidecar_injector.settings``: only tests/test_chart.py still imports it.

Delete this file once tests/test_chart.py imports from the sub-packages (issue 17); nothing in the package imports it.
"""

from sidecar_injector.runtime.settings import Settings

__all__ = ["Settings"]
