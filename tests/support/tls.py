"""HTTPS on loopback for tests: a throwaway self-signed certificate and a TLS uvicorn thread."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tests.support.servers import ServerThread


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with the openssl CLI (the venv has no
    ``cryptography`` package)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl command is needed to make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class TLSServerThread(ServerThread):
    """ServerThread speaking HTTPS with the given uvicorn TLS options."""

    def __init__(self, app: Any, sock: socket.socket, tls_options: dict[str, Any]) -> None:
        super().__init__(app, sock)
        self.url = f"https://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", **tls_options)
        self.server = uvicorn.Server(config)
