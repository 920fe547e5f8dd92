"""Where the Smartshop broker listens.

BROKER_ENDPOINT is tcp://127.0.0.1:5555 (the seed's default) unless the
environment variable SMARTSHOP_ENDPOINT names another ZeroMQ endpoint.
``default_endpoint()`` reads the environment again each time.
"""
import os

__all__ = ["DEFAULT_ENDPOINT", "BROKER_ENDPOINT", "default_endpoint"]

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


def default_endpoint() -> str:
    """$SMARTSHOP_ENDPOINT, else tcp://127.0.0.1:5555."""
    return os.environ.get("SMARTSHOP_ENDPOINT") or DEFAULT_ENDPOINT


BROKER_ENDPOINT = default_endpoint()
