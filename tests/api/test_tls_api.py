"""The REST API over TLS (``service.enable_tls``), with client certificates
required (``service.verify_https_client_certificate``) and an API key, on two
HTTP processes: the official qdrant-client with ``https=True`` and ``api_key``
works; a client without a certificate, one that does not trust the server's
authority, and plain HTTP do not get in.

The certificates are made here with ``cryptography``: an authority, a server
certificate for 127.0.0.1 signed by it, and a client certificate signed by it.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import subprocess
import sys
import urllib.request

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from qdrant_client import QdrantClient, models

from tests.conftest import REPO_ROOT, ShoalServer

KEY = "api-key-for-the-tls-tests-0123456789"
DIM = 4


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _certificate(subject: str, key, issuer: str, issuer_key, *, ca: bool = False, usage=None, ip: str | None = None):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if ip is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(folder, name: str, cert, key) -> tuple[str, str]:
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _certificate("Shoal test CA", ca_key, "Shoal test CA", ca_key, ca=True)
    server = _certificate("127.0.0.1", server_key, "Shoal test CA", ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH,
                          ip="127.0.0.1")
    client = _certificate("a client", client_key, "Shoal test CA", ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    paths = {"ca": _write(folder, "ca", ca, ca_key)[0]}
    paths["server"] = _write(folder, "server", server, server_key)
    paths["client"] = _write(folder, "client", client, client_key)
    return paths


def context(pki, client_cert: bool = True, trust: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki["ca"] if trust else None)
    if client_cert:
        ctx.load_cert_chain(*pki["client"])
    return ctx


@pytest.fixture(scope="module")
def server(tmp_path_factory, pki):
    base = tmp_path_factory.mktemp("tls")
    server = ShoalServer(base / "storage", base, env={
        "SHOAL__SERVICE__API_KEY": KEY, "SHOAL__SERVICE__ENABLE_TLS": "true",
        "SHOAL__SERVICE__VERIFY_HTTPS_CLIENT_CERTIFICATE": "true", "SHOAL__SERVICE__WORKERS": "2",
        "SHOAL__TLS__CERT": pki["server"][0], "SHOAL__TLS__KEY": pki["server"][1], "SHOAL__TLS__CA_CERT": pki["ca"]})
    server.scheme = "https"
    server.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                                urllib.request.HTTPSHandler(context=context(pki)))
    server.start()
    yield server
    server.stop()


def test_qdrant_client_over_https_with_an_api_key(server, pki):
    client = QdrantClient(host="127.0.0.1", port=server.port, https=True, api_key=KEY, timeout=60,
                          verify=context(pki))
    client.create_collection("secure", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.DOT))
    client.upsert("secure", [models.PointStruct(id=i, vector=[float(i)] * DIM) for i in range(1, 4)], wait=True)
    for _ in range(4):  # connections land on either HTTP process
        assert [p.id for p in client.query_points("secure", query=[1.0] * DIM, limit=2).points] == [3, 2]
    client.delete_collection("secure")
    client.close()


def test_health_checks_over_https(server, pki):
    for _ in range(4):
        with httpx.Client(verify=context(pki)) as https:
            for path in ("/healthz", "/livez", "/readyz", "/"):
                assert https.get(server.url + path).status_code == 200, path
            assert https.get(server.url + "/collections").status_code == 401  # TLS is not a key


def test_who_does_not_get_in(server, pki):
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        with httpx.Client(verify=context(pki, client_cert=False)) as no_certificate:
            no_certificate.get(server.url + "/healthz")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        with httpx.Client(verify=context(pki, trust=False)) as distrustful:
            distrustful.get(server.url + "/healthz")
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectError)):
        with httpx.Client() as plain:
            plain.get(f"http://127.0.0.1:{server.port}/healthz")


def test_an_unusable_certificate_ends_the_server_in_one_line(tmp_path, pki):
    missing = tmp_path / "missing.pem"
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", "1", "--storage", str(tmp_path / "s")],
        env={"SHOAL__SERVICE__ENABLE_TLS": "true", "SHOAL__TLS__CERT": str(missing),
             "SHOAL__TLS__KEY": pki["server"][1], "PATH": "/usr/bin:/bin"},
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"shoal: error: tls.cert {missing} / tls.key {pki['server'][1]}: "
                                                "No such file or directory"]
