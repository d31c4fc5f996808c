"""Client-side OPC UA security: application certificate kept in the PKI folder, trust lists, user identity."""

from __future__ import annotations

import dataclasses
import logging

from asyncua import Client, ua
from asyncua.crypto import security_policies, uacrypto

from connectors.opcua.config import OpcUaSecurity, SecurityPolicy
from connectors.opcua.pki import (
    Pki,
    ServerCertificateRejected,
    default_application_uri,
    own_certificate,
    validate_server_certificate,
    warn_if_expiring,
)

POLICIES: dict[SecurityPolicy, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}


class _RedactPasswords(logging.Filter):
    """asyncua logs every request it sends at DEBUG, ActivateSession's password included; mask it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_without_password(arg) for arg in record.args)
        return True


def _without_password(arg: object) -> object:
    if not isinstance(arg, ua.ActivateSessionRequest):
        return arg
    token = arg.Parameters.UserIdentityToken
    if not isinstance(token, ua.UserNameIdentityToken) or not token.Password:
        return arg
    # a copy: the request itself is about to be sent
    params = dataclasses.replace(arg.Parameters, UserIdentityToken=dataclasses.replace(token, Password=b"<redacted>"))
    return dataclasses.replace(arg, Parameters=params)


logging.getLogger("asyncua.client.ua_client.UASocketProtocol").addFilter(_RedactPasswords())


class EndpointNotOffered(ConnectionError):
    """The server has no endpoint with the configured security mode and policy."""


def _describe(endpoint: ua.EndpointDescription) -> str:
    mode = "None" if endpoint.SecurityMode == ua.MessageSecurityMode.None_ else endpoint.SecurityMode.name
    return f"{mode}/{endpoint.SecurityPolicyUri.rpartition('#')[2]}"


async def _matching_endpoint(client: Client, security: OpcUaSecurity) -> ua.EndpointDescription:
    mode = ua.MessageSecurityMode[security.mode]
    policy_uri = POLICIES[security.policy].URI
    endpoints = await client.connect_and_get_server_endpoints()
    for endpoint in endpoints:
        if endpoint.SecurityMode == mode and endpoint.SecurityPolicyUri == policy_uri:
            return endpoint
    offered = ", ".join(sorted({_describe(e) for e in endpoints})) or "nothing"
    raise EndpointNotOffered(
        f"server offers no endpoint with mode {security.mode} and policy {security.policy}; it offers {offered}"
    )


async def secure_client(client: Client, security: OpcUaSecurity, device_id: str) -> None:
    """Configure a fresh `client` (before connect) for the security mode, certificates and user of `security`.

    With Sign or SignAndEncrypt this makes the agent's certificate on first use, asks the server for its
    endpoints over an unsecured channel (as every OPC UA client must), and refuses a server certificate
    that is not in trusted/ with ServerCertificateRejected before any secure channel is opened. All
    errors are ConnectionError subclasses with a message an operator can act on.
    """
    if security.username is not None:
        client.set_user(security.username)
        if security.password is not None:
            client.set_password(security.password.get_secret_value())
    if security.mode == "None":
        return
    pki = Pki(security.pki_dir)
    application_uri = security.application_uri or default_application_uri()
    # The server checks that the session's ApplicationUri is the one in the certificate.
    client.application_uri = application_uri
    own = own_certificate(pki, application_uri, security.certificate_days)
    warn_if_expiring(own, "own", device_id, security.expiry_warning_days)
    endpoint = await _matching_endpoint(client, security)
    server_cert = uacrypto.x509_from_der(endpoint.ServerCertificate)
    if server_cert is None:
        raise ServerCertificateRejected(f"server sent no certificate with its {_describe(endpoint)} endpoint")
    await validate_server_certificate(pki, server_cert, endpoint.Server)
    warn_if_expiring(server_cert, "server", device_id, security.expiry_warning_days)
    await client.set_security(
        POLICIES[security.policy],
        pki.cert_path,
        pki.key_path,
        server_certificate=uacrypto.der_from_x509(server_cert),
        mode=ua.MessageSecurityMode[security.mode],
    )
