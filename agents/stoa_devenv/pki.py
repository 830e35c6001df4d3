"""Keys and certificates of the test bed, made with the ``openssl`` command.

- ``sa.key``/``sa.pub``: service-account token signing;
- ``ca.crt``: the test bed's CA; the kubelet trusts it for client certificates;
- ``kubelet-client.crt``: the API server's client certificate towards the kubelet (``kubectl logs/exec``),
  in group ``system:masters`` so the kubelet's webhook authorization allows it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def service_account_keys(pki: Path) -> None:
    if (pki / "sa.key").exists():
        return
    _openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
    _openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))


def certificate_authority(pki: Path) -> None:
    if (pki / "ca.crt").exists():
        return
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=stoa-test-bed-ca",
        "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"),
    )  # fmt: skip


def client_certificate(pki: Path, name: str, subject: str) -> tuple[Path, Path]:
    """A client certificate signed by the test bed's CA: (cert, key)."""
    cert, key, csr = pki / f"{name}.crt", pki / f"{name}.key", pki / f"{name}.csr"
    if not cert.exists():
        certificate_authority(pki)
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", str(key), "-out", str(csr)
        )
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
            "-CAcreateserial", "-days", "3650", "-out", str(cert),
        )  # fmt: skip
        csr.unlink()
    return cert, key
