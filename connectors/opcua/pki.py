"""The agent's PKI folder: its own application certificate (made once), trusted and rejected server certificates.

Layout under `pki_dir`: `own/cert.der` and `own/key.pem` (mode 0600), `trusted/` (certificates, or the CAs
that issued them, that the operator accepts), `rejected/` (server certificates that were refused, for the
operator to inspect and move into `trusted/`).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID

log = logging.getLogger(__name__)

_SECONDS_PER_DAY = 86400


class PkiError(ConnectionError):
    """The PKI folder prevents a secure connection; the message says what to do about it."""


class OwnCertificateError(PkiError):
    """The agent's own certificate or key is unusable (expired, made for another URI, unreadable)."""


class ServerCertificateRejected(PkiError):
    """The server's certificate failed validation. `saved_as`: its copy in rejected/, when trusting it would help."""

    def __init__(self, message: str, saved_as: Path | None = None) -> None:
        super().__init__(message)
        self.saved_as = saved_as


@dataclass(frozen=True)
class Pki:
    root: Path

    @property
    def own_dir(self) -> Path:
        return self.root / "own"

    @property
    def trusted_dir(self) -> Path:
        return self.root / "trusted"

    @property
    def rejected_dir(self) -> Path:
        return self.root / "rejected"

    @property
    def cert_path(self) -> Path:
        return self.own_dir / "cert.der"

    @property
    def key_path(self) -> Path:
        return self.own_dir / "key.pem"

    def create_folders(self) -> None:
        for folder in (self.own_dir, self.trusted_dir, self.rejected_dir):
            folder.mkdir(parents=True, exist_ok=True)


def default_application_uri() -> str:
    return f"urn:{socket.gethostname()}:edgeproof"


def thumbprint(cert: x509.Certificate) -> str:
    """SHA-1 of the DER encoding, the certificate thumbprint OPC UA uses (Part 6, 6.2.3)."""
    return cert.fingerprint(hashes.SHA1()).hex().upper()


def subject_of(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def certificate_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def _renew_hint(pki: Pki) -> str:
    return (
        f"delete {pki.cert_path} and {pki.key_path} to have a new certificate made at the next connection, "
        "then trust the new one on the servers"
    )


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.chmod(tmp, mode)  # a leftover tmp file would otherwise keep its old mode
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _make_certificate(key: RSAPrivateKey, application_uri: str, days: int) -> x509.Certificate:
    host = socket.gethostname()
    return cert_gen.generate_self_signed_app_certificate(
        key,
        f"edgeproof@{host}",
        {"organizationName": "edgeproof"},
        [x509.UniformResourceIdentifier(application_uri), x509.DNSName(host)],
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        days=days,
    )


def _load_key(pki: Pki) -> RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pki.key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise OwnCertificateError(f"cannot read the private key {pki.key_path} ({e}); {_renew_hint(pki)}") from None
    if not isinstance(key, RSAPrivateKey):
        raise OwnCertificateError(f"{pki.key_path} is not an RSA key; {_renew_hint(pki)}")
    return key


def own_certificate(pki: Pki, application_uri: str, days: int) -> x509.Certificate:
    """The agent's certificate from own/, made (with its key) on first use and reused afterwards.

    Raises OwnCertificateError when it has expired, was made for another ApplicationUri, or does not
    belong to the key: a new certificate would have to be trusted again on every server, so that is
    the operator's decision.
    """
    pki.create_folders()
    if not pki.key_path.exists():
        key = cert_gen.generate_private_key()
        # the certificate left from an older key would not match the new one
        pki.cert_path.unlink(missing_ok=True)
        _write_atomically(pki.key_path, cert_gen.dump_private_key_as_pem(key), 0o600)
    else:
        key = _load_key(pki)
    if not pki.cert_path.exists():
        cert = _make_certificate(key, application_uri, days)
        _write_atomically(pki.cert_path, cert.public_bytes(serialization.Encoding.DER), 0o644)
        log.info(
            "opcua own certificate generated",
            extra={"path": str(pki.cert_path), "application_uri": application_uri, "thumbprint": thumbprint(cert)},
        )
        return cert
    try:
        cert = x509.load_der_x509_certificate(pki.cert_path.read_bytes())
    except ValueError as e:
        raise OwnCertificateError(f"cannot read {pki.cert_path} ({e}); {_renew_hint(pki)}") from None
    if cert.public_key() != key.public_key():
        raise OwnCertificateError(f"{pki.cert_path} does not belong to {pki.key_path}; {_renew_hint(pki)}")
    if application_uri not in certificate_uris(cert):
        raise OwnCertificateError(
            f"{pki.cert_path} was made for ApplicationUri {certificate_uris(cert)} but application_uri is "
            f"{application_uri!r}; set application_uri back, or {_renew_hint(pki)}"
        )
    if cert.not_valid_after_utc <= datetime.now(UTC):
        raise OwnCertificateError(
            f"{pki.cert_path} expired on {cert.not_valid_after_utc.isoformat()}; to renew it, {_renew_hint(pki)}"
        )
    return cert


def warn_if_expiring(cert: x509.Certificate, role: str, device_id: str, warning_days: int) -> None:
    """A WARNING when `cert` ("own" or "server") expires within `warning_days`."""
    left_s = (cert.not_valid_after_utc - datetime.now(UTC)).total_seconds()
    if left_s >= warning_days * _SECONDS_PER_DAY:
        return
    log.warning(
        f"opcua {role} certificate expires soon",
        extra={
            "device": device_id,
            "certificate": role,
            "subject": subject_of(cert),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "days_left": int(left_s // _SECONDS_PER_DAY),
            "thumbprint": thumbprint(cert),
        },
    )


def _rejected_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else "server"
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', common_name).strip('_')}-{thumbprint(cert)}.der"


def save_rejected(pki: Pki, cert: x509.Certificate) -> Path:
    """Keep a refused server certificate in rejected/ (once) so an operator can trust it by moving the file."""
    pki.create_folders()
    path = pki.rejected_dir / _rejected_name(cert)
    if not path.exists():
        _write_atomically(path, cert.public_bytes(serialization.Encoding.DER), 0o644)
    return path


async def _trust_store(pki: Pki) -> TrustStore | None:
    """The certificates in trusted/, read afresh; None when it holds none (cryptography refuses an empty store)."""
    if not any(p.suffix.lower() in (".der", ".pem") for p in pki.trusted_dir.iterdir()):
        return None
    store = TrustStore([pki.trusted_dir], [])
    try:
        await store.load_trust()
    except ValueError as e:
        raise PkiError(f"{pki.trusted_dir} holds a .der or .pem file that is not a certificate: {e}") from None
    return store


async def validate_server_certificate(pki: Pki, cert: x509.Certificate, server: ua.ApplicationDescription) -> None:
    """Accept `cert` only if trusted/ holds it (or its CA) and it is valid for `server`; else ServerCertificateRejected.

    The trust list is read again at each call, so a certificate moved into trusted/ counts at the next connection.
    """
    pki.create_folders()
    store = await _trust_store(pki)
    checks = CertificateValidatorOptions.TRUSTED_VALIDATION if store else CertificateValidatorOptions.EXT_VALIDATION
    try:
        await CertificateValidator(checks | CertificateValidatorOptions.PEER_SERVER, store).validate(cert, server)
    except ServiceError as e:
        raise _rejection(pki, cert, server, e.code) from None
    if store is None:
        raise _rejection(pki, cert, server, ua.StatusCodes.BadCertificateUntrusted)


def _rejection(
    pki: Pki, cert: x509.Certificate, server: ua.ApplicationDescription, code: int
) -> ServerCertificateRejected:
    what = f"server certificate {subject_of(cert)} (thumbprint {thumbprint(cert)})"
    if code == ua.StatusCodes.BadCertificateUntrusted:
        path = save_rejected(pki, cert)
        return ServerCertificateRejected(
            f"{what} is not trusted; it was saved as {path}: move that file into {pki.trusted_dir}/ to trust it",
            saved_as=path,
        )
    reasons = {
        ua.StatusCodes.BadCertificateTimeInvalid: (
            f"is valid only from {cert.not_valid_before_utc.isoformat()} to {cert.not_valid_after_utc.isoformat()}"
        ),
        ua.StatusCodes.BadCertificateUriInvalid: (
            f"names {certificate_uris(cert)} but the server's ApplicationUri is {server.ApplicationUri!r}"
        ),
        ua.StatusCodes.BadCertificateUseNotAllowed: "does not allow use by an OPC UA server (key usage)",
        ua.StatusCodes.BadCertificateInvalid: "lacks the subjectAltName or key usage extensions",
        ua.StatusCodes.BadCertificateRevoked: "is revoked",
    }
    reason = reasons.get(code, ua.StatusCode(code).name)
    return ServerCertificateRejected(f"{what} {reason}")
