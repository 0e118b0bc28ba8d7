"""Transitional alias of the old flat module ``sidecar_injector.crds``: only tests/test_chart.py still imports it.

Delete this file once tests/test_chart.py imports from the sub-packages (issue 17); nothing in the package imports it.
"""

from sidecar_injector.profiles.crd_schema import CRD_DIRECTORY, custom_resource_definition
from sidecar_injector.profiles.resources import CLUSTER, NAMESPACED

__all__ = ["CLUSTER", "CRD_DIRECTORY", "NAMESPACED", "custom_resource_definition"]
