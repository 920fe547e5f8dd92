"""The seed's core package, kept so the seed's services run unchanged.

core.config  -- where the broker listens (BROKER_ENDPOINT).
core.message -- build_message, dumps, loads: smartshop.message's, re-exported.

New code uses the smartshop package (python/ in this repository,
docs/python-api.md): `from smartshop.message import build_message, loads, dumps`.
"""
