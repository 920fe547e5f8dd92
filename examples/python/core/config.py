"""Where the Smartshop broker listens.

BROKER_ENDPOINT is tcp://127.0.0.1:5555 (the seed's default) unless the
environment variable SMARTSHOP_ENDPOINT names another ZeroMQ endpoint.
(The same as smartshop.config, which new code imports.)
"""
import os

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"

BROKER_ENDPOINT = os.environ.get("SMARTSHOP_ENDPOINT") or DEFAULT_ENDPOINT
