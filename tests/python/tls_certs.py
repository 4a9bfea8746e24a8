"""Certificates for the TLS tests, made by trustme: a test CA, a server certificate for
localhost / 127.0.0.1 / ::1, and a client certificate, written as PEM files."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass
class Certs:
    dir: Path
    ca: Path  # the CA certificate: clients verify the server with it, --ca-certs uses it
    cert: Path  # the server's certificate chain
    key: Path  # its private key (PKCS#8)
    combined: Path  # key and chain in one file (--certfile alone)
    client_cert: Path  # a client certificate signed by the CA, with its key
    client_key: Path
    authority: trustme.CA

    def server_flags(self) -> list[str]:
        return ["--certfile", str(self.cert), "--keyfile", str(self.key)]


def make_certs(directory: str | os.PathLike | None = None) -> Certs:
    d = Path(directory or tempfile.mkdtemp(prefix="qiao-tls-"))
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", "::1")
    client = ca.issue_cert("client@example.com", common_name="test client")
    certs = Certs(
        dir=d,
        ca=d / "ca.pem",
        cert=d / "cert.pem",
        key=d / "key.pem",
        combined=d / "combined.pem",
        client_cert=d / "client.pem",
        client_key=d / "client-key.pem",
        authority=ca,
    )
    ca.cert_pem.write_to_path(str(certs.ca))
    server.private_key_pem.write_to_path(str(certs.key))
    with open(certs.cert, "wb") as f:
        f.writelines(blob.bytes() for blob in server.cert_chain_pems)
    server.private_key_and_cert_chain_pem.write_to_path(str(certs.combined))
    client.cert_chain_pems[0].write_to_path(str(certs.client_cert))
    client.private_key_pem.write_to_path(str(certs.client_key))
    return certs
