#!/usr/bin/python3
"""`pip install ./python` into a fresh venv (--system-site-packages, for
Debian's python3-zmq) works offline, and the installed package imports and
talks to the broker from outside the repository.

The package is copied first: pip builds a local directory in place, and
the test must not leave build/ or *.egg-info in the tree."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import support  # noqa: E402
from support import SLOW, bp  # noqa: E402

CHECK = r"""
import os, sys
import smartshop, smartshop.asyncio, smartshop.message, smartshop.keys, zmq
assert smartshop.__file__.startswith(sys.prefix), smartshop.__file__
assert not smartshop.__file__.startswith(%(repo)r), smartshop.__file__
assert zmq.__file__.startswith("/usr/lib/python3/dist-packages"), zmq.__file__
from smartshop.message import build_message, dumps, loads
with smartshop.Client(sys.argv[1]) as bus:
    print(bus.call_broker("ping")["status"], smartshop.__version__)
"""


class PipInstallTest(unittest.TestCase):
    def test_offline_install_into_a_fresh_venv(self):
        with tempfile.TemporaryDirectory(prefix="smartshop-venv-") as d:
            src = os.path.join(d, "src")
            shutil.copytree(support.PYTHON_DIR, src,
                            ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
            venv = os.path.join(d, "venv")
            out = subprocess.run([bp.PYTHON, "-m", "venv", "--system-site-packages", venv],
                                 capture_output=True, text=True, timeout=120)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            # offline: no index, and any proxy pointing nowhere
            env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
                       PIP_NO_CACHE_DIR="1", http_proxy="http://127.0.0.1:9",
                       https_proxy="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
                       HTTPS_PROXY="http://127.0.0.1:9", PYTHONDONTWRITEBYTECODE="1")
            env.pop("PYTHONPATH", None)
            out = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--no-index",
                                  "--no-build-isolation", src],
                                 capture_output=True, text=True, timeout=300, env=env, cwd=d)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            with bp.Broker() as b:
                out = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                                      CHECK % {"repo": support.REPO_ROOT}, b.endpoint],
                                     capture_output=True, text=True, timeout=30 * SLOW, env=env,
                                     cwd=d)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            self.assertEqual(out.stdout.split(), ["ok", "0.2.0"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
