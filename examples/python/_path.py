"""Lets the examples run from the repository without installing smartshop:
puts ../../python (the package's folder) on sys.path when smartshop is not
importable. An installed smartshop (pip install ./python) needs none of it."""
import os
import sys

try:
    import smartshop  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
