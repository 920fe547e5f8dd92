"""Smartshop bus helpers for Python peers: the seed's core package.

core.config  -- where the broker listens (BROKER_ENDPOINT).
core.message -- build_message, dumps, loads: the seed's message format.
"""
