"""Transitional alias of the old flat module ``sidecar_injector.injection``: only tests/test_chart.py still imports it.

Delete this file once tests/test_chart.py imports from the sub-packages (issue 17); nothing in the package imports it.
"""

from sidecar_injector.core.decide import decide
from sidecar_injector.core.inputs import InjectionPolicy, RequestContext

__all__ = ["InjectionPolicy", "RequestContext", "decide"]
