"""CURVE keys from the files ``smartshop-broker --keygen`` writes, and from
ZeroMQ certificates (``zmq.auth.create_certificates``), the way the broker
reads them (src/keyfile.c):

- a file whose first line that is not a comment (``# `` starts one) is a
  40-character Z85 key holds that key (--keygen before 0.2);
- otherwise it is a ZeroMQ certificate (ZPL), and its ``public-key = "..."``
  or ``secret-key = "..."`` line holds the key;
- when both are there (--keygen since 0.2 writes the key line and then a
  ``curve`` section), the certificate's line for the wanted key wins.

A secret key file that others can read is refused, as the broker does.
Since 0.2 the files --keygen writes are also read by pyzmq's own
``zmq.auth.load_certificate``.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import zmq

__all__ = ["is_key", "load_key", "load_key_pair", "Curve"]

_Z85 = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
_ZPL = re.compile(r"""^(public-key|secret-key)[ \t]*=[ \t]*(?:"([^"]*)"|'([^']*)'|(\S*))""")

PathOrKey = Union[str, bytes, "os.PathLike[str]"]


def is_key(text: Union[str, bytes]) -> bool:
    """True if `text` is a CURVE key in Z85 (40 characters)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            return False
    return bool(_Z85.match(text))


def _strip_comment(line: str) -> str:
    # '#' is a Z85 character: a comment starts only at a '#' at the start of
    # the line or after a blank, followed by a blank or the end of the line.
    for i, ch in enumerate(line):
        if ch == "#" and (i == 0 or line[i - 1] in " \t") and \
                (i + 1 == len(line) or line[i + 1] in " \t\r\n"):
            return line[:i]
    return line


def load_key(path: Union[str, "os.PathLike[str]"], secret: bool = False) -> bytes:
    """The key in the key file `path`: its secret key with `secret`, else its
    public key, as 40 Z85 bytes. Raises OSError for a file that cannot be
    read, PermissionError for a secret file others can read, ValueError for
    a file without the key."""
    path = os.fspath(path)
    if secret:
        mode = os.stat(path).st_mode
        if mode & 0o077:
            raise PermissionError("key file %s: permissions %03o are too open: only its owner "
                                  "may read a secret key (chmod 600 %s)"
                                  % (path, stat.S_IMODE(mode), path))
    wanted = "secret-key" if secret else "public-key"
    bare = None
    first = True
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            line = _strip_comment(raw.rstrip("\r\n")).strip(" \t")
            if not line:
                continue
            m = _ZPL.match(line)
            if m and m.group(1) == wanted:
                value = next(g for g in m.groups()[1:] if g is not None)
                if is_key(value):
                    return value.encode("ascii")
            if first:
                word = line.split()[0]
                if is_key(word):
                    bare = word.encode("ascii")
            first = False
    if bare is not None:
        return bare
    raise ValueError("key file %s: no CURVE key in it (expected a line of 40 Z85 characters as "
                     "smartshop-broker --keygen writes, or a ZeroMQ certificate's %s line)"
                     % (path, wanted))


def _key(value: PathOrKey, secret: bool) -> bytes:
    """A key given as itself (40 Z85 characters) or as a key file's path."""
    if isinstance(value, bytes) and is_key(value):
        return value
    if isinstance(value, str) and is_key(value) and not os.path.exists(value):
        return value.encode("ascii")
    if isinstance(value, bytes):
        value = value.decode()
    return load_key(value, secret=secret)


def load_key_pair(prefix: Union[str, "os.PathLike[str]"]) -> Tuple[bytes, bytes]:
    """(public, secret) of the pair ``smartshop-broker --keygen PREFIX`` wrote:
    PREFIX.key (the secret), PREFIX.pub if present (else the public key is
    computed from the secret one). `prefix` may also name the secret file
    itself (a .key, or pyzmq's .key_secret)."""
    prefix = os.fspath(prefix)
    secret_path = prefix if os.path.isfile(prefix) else prefix + ".key"
    secret = load_key(secret_path, secret=True)
    derived = zmq.curve_public(secret)
    base = secret_path[:-4] if secret_path.endswith(".key") else prefix
    pub_path = base + ".pub"
    if os.path.exists(pub_path):
        public = load_key(pub_path)
        if public != derived:
            raise ValueError("key files %s and %s are not one pair" % (secret_path, pub_path))
    return derived, secret


@dataclass(frozen=True)
class Curve:
    """What a client needs for CURVE: the broker's public key and its own pair,
    each 40 Z85 bytes. ``Curve.load(server, client)`` reads them from files."""

    server_key: bytes
    public_key: bytes
    secret_key: bytes

    @classmethod
    def load(cls, server: PathOrKey, client: Union[str, "os.PathLike[str]", Tuple[PathOrKey, PathOrKey]]
             ) -> "Curve":
        """`server`: the broker's public key, or its key file (broker.pub).
        `client`: a key-pair prefix (``--keygen`` PREFIX), or (public, secret)
        as keys or key files."""
        server_key = _key(server, secret=False)
        if isinstance(client, tuple):
            public, secret = _key(client[0], secret=False), _key(client[1], secret=True)
        else:
            public, secret = load_key_pair(client)
        return cls(server_key, public, secret)

    def apply(self, sock: zmq.Socket) -> None:
        """Set the socket's CURVE options (before it connects)."""
        sock.curve_serverkey = self.server_key
        sock.curve_publickey = self.public_key
        sock.curve_secretkey = self.secret_key


def as_curve(value: Optional[Union["Curve", Tuple[PathOrKey, PathOrKey, PathOrKey]]]) -> Optional[Curve]:
    """A Curve from a Curve, or from (server, public, secret) keys or files."""
    if value is None or isinstance(value, Curve):
        return value
    server, public, secret = value
    return Curve(_key(server, False), _key(public, False), _key(secret, True))
