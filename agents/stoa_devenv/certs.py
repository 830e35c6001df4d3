"""The CA certificates this machine trusts beyond Debian's stock set, for ``EXTRA_CA_CERTS`` builds.

Behind a TLS-intercepting proxy HTTPS verifies only with the machine's own bundle
(``/etc/ssl/certs/ca-certificates.crt``), which holds the proxy's CA next to the public ones. The whole bundle
(~220 KB) cannot travel as a build argument (Linux caps one argument at 128 KiB), and the public roots are
in the image already; what the build lacks is exactly the certificates of the bundle that are not among
the distribution's stock ones (``/usr/share/ca-certificates``) — the ones an administrator added.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from pathlib import Path

HOST_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
STOCK_DIR = Path("/usr/share/ca-certificates")
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", re.DOTALL)


def certificates(pem_text: str) -> list[bytes]:
    """The DER bytes of every certificate in a PEM text, in order."""
    return [base64.b64decode("".join(body.split())) for body in _PEM.findall(pem_text)]


def to_pem(der: bytes) -> str:
    body = base64.b64encode(der).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def extra_certificates(bundle: str, stock: Iterable[str]) -> str:
    """The certificates of ``bundle`` that none of the ``stock`` PEM texts holds, as PEM (maybe empty)."""
    known = {der for text in stock for der in certificates(text)}
    extra: list[bytes] = []
    for der in certificates(bundle):
        if der not in known and der not in extra:
            extra.append(der)
    return "".join(to_pem(der) for der in extra)


def host_extra_ca_certs(bundle: Path = HOST_BUNDLE, stock_dir: Path = STOCK_DIR) -> str:
    """The machine's own additions to its CA bundle (empty when it has none or no bundle)."""
    if not bundle.is_file():
        return ""
    stock = (
        [p.read_text(errors="replace") for p in sorted(stock_dir.rglob("*.crt"))]
        if stock_dir.is_dir()
        else []
    )
    return extra_certificates(bundle.read_text(errors="replace"), stock)
