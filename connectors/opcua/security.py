"""Client-side OPC UA security: application certificate kept in the PKI folder, trust lists, user identity."""

from __future__ import annotations

from asyncua import Client

from connectors.opcua.config import OpcUaSecurity


async def secure_client(client: Client, security: OpcUaSecurity, device_id: str) -> None:
    """Configure `client` (before connect) for the security mode, certificates and user of `security`."""
    if security.mode != "None":
        raise NotImplementedError("security modes other than None: being written (issue #4)")
    if security.username is not None:
        client.set_user(security.username)
        if security.password is not None:
            client.set_password(security.password.get_secret_value())
