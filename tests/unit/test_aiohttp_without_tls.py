"""aiohttp as pid1 loads it (pid1.engine.client.import_aiodocker): without
TLS, ssl put back for aiodocker and the rest, and a user-data URL that
redirects to https:// a FetchError like any other failed fetch. In a child
interpreter: aiohttp imports once per process, and other tests may have
loaded it already."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import asyncio, http.server, ssl, sys, threading

from pid1.engine.client import import_aiodocker

aiodocker = import_aiodocker()
import aiohttp.connector

from pid1.phases.userdata_url import FetchError, fetch

print("aiohttp ssl:", aiohttp.connector.ssl)
print("ssl back:", sys.modules["ssl"] is ssl, aiodocker.docker.ssl is ssl)


class Redirect(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", "https://127.0.0.1:9/user-data")
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", 0), Redirect)
threading.Thread(target=server.serve_forever, daemon=True).start()
try:
    asyncio.run(fetch(f"http://127.0.0.1:{server.server_port}/user-data", 10))
except FetchError as exc:
    print("redirect:", "http:// only" in str(exc))
"""


def test_aiohttp_has_no_tls_and_ssl_is_put_back() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, cwd=REPO, check=True
    ).stdout
    assert out.splitlines() == ["aiohttp ssl: None", "ssl back: True True", "redirect: True"]
