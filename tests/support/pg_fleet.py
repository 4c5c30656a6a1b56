"""A fleet's PostgreSQL buffer seen from outside: the settings that point a crawl at it, its rows
read beside the running workers, and a relay to the API that a test freezes, to keep rows leased to a worker.

The tables are read with a connection of the test's own (psycopg), never through scrapy_sdi: what
the workers left in the database is the evidence.
"""

from __future__ import annotations

import re
import socket
import threading
from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit

import psycopg

#: The API's filters in the fleet tests: the demo site has ``.tmp`` files and ``/private/`` ones.
FILTERS = [
    {"id": 2, "field": "filename", "kind": "glob", "pattern": "*.tmp"},
    {"id": 3, "field": "url", "kind": "regex", "pattern": "/private/"},
]


def excluded(url: str) -> bool:
    """Whether FILTERS exclude the demo site's file ``url`` (its filename is the URL's last part)."""
    return url.lower().endswith(".tmp") or re.search("/private/", url) is not None


def buffer_settings(url: str) -> dict[str, str]:
    """The settings that put a crawl's buffer on the PostgreSQL database at ``url``."""
    return {"SDI_BUFFER": "postgres", "SDI_BUFFER_URL": url}


def pg_rows(url: str) -> list[dict[str, Any]]:
    """Every row of the buffer (seq, id, url, state, lease_owner, reason); none before its tables exist."""
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            cur = conn.execute(
                "SELECT seq, id, url, state, lease_owner, reason FROM sdi_results ORDER BY seq"
            )
        except psycopg.errors.UndefinedTable:
            return []
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, values, strict=True)) for values in cur.fetchall()]


def pg_owners(url: str) -> list[str]:
    """The lease owners registered in the buffer, oldest first."""
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            cur = conn.execute("SELECT owner FROM sdi_owners ORDER BY since")
        except psycopg.errors.UndefinedTable:
            return []
        return [owner for (owner,) in cur.fetchall()]


class Relay:
    """A TCP relay to an API that a test can freeze: from then on, nothing a client sends reaches
    the API (the answers to what did still come back), so the client's requests hang with their
    rows in flight, and the API stores none of them."""

    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._path = parts.path
        self._open = threading.Event()
        self._open.set()
        self._stopped = False
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, name="relay", daemon=True).start()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self._path}"

    def freeze(self) -> None:
        self._open.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # stopped
            upstream = socket.create_connection(self._upstream)
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, request: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if request:
                    self._open.wait()  # frozen: held until the relay stops, then dropped
                    if self._stopped:
                        return
                sink.sendall(chunk)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def stop(self) -> None:
        self._stopped = True
        self._open.set()
        with suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
        self._listener.close()
        for sock in self._sockets:
            with suppress(OSError):
                sock.close()
