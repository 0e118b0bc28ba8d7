"""Transitional alias of the old flat module ``sidecar_injector.tls``: only tests/test_chart.py still imports it.

Delete this file once tests/test_chart.py imports from the sub-packages (issue 17); nothing in the package imports it.
"""

from sidecar_injector.webhook.tls import generate_ca, service_dns_names

__all__ = ["generate_ca", "service_dns_names"]
