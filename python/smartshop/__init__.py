"""smartshop: the Python library of the Smartshop bus.

    from smartshop import Client, Service, RemoteError

    with Client() as bus:                          # $SMARTSHOP_ENDPOINT or tcp://127.0.0.1:5555
        print(bus.request("echo-service", "echo", {"hello": "world"}, timeout=2))

Modules: smartshop.message (the seed's build_message, dumps, loads),
smartshop.client (Client), smartshop.service (Service), smartshop.asyncio
(the same on asyncio), smartshop.errors (one class per protocol code),
smartshop.keys (CURVE key files), smartshop.config (the default endpoint).
docs/python-api.md in the repository is the reference.
"""
from ._engine import Failover
from .client import Client
from .config import DEFAULT_ENDPOINT, default_endpoint
from .errors import *  # noqa: F401,F403
from .errors import __all__ as _errors_all
from .keys import Curve, load_key, load_key_pair
from .message import Message, build_message, dumps, loads
from .service import Service

__version__ = "0.2.0"

__all__ = ["Client", "Service", "Failover", "Message", "Curve", "load_key", "load_key_pair", "build_message",
           "dumps", "loads", "DEFAULT_ENDPOINT", "default_endpoint", "__version__"] + list(_errors_all)
