"""One OPC UA server per simulated CNC, with a node layout after OPC 40501 (umati MachineTool) and
OPC 40502 (CNC).

Plain variables with string node ids `ns=2;s=<MACHINE_ID>/<path>` rather than the companion
specs' full type system: enough for a connector to map the same signals a real machine tool
exposes. Only changed values are written, each with the plant time as its SourceTimestamp.
Node map and state mapping: docs/simulators.md.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from asyncua import Node, Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from edgeproof.clock import Clock
from simulators.plant import MachinePlant, Snapshot, State

NAMESPACE_URI = "urn:edgeproof:sim:machinetool"
NAMESPACE_INDEX = 2

# OPC 40501 MachineOperationMode, MachineryItemState and OPC 40501/40502 program states.
MODE_MANUAL, MODE_AUTOMATIC, MODE_SETUP = 0, 1, 2  # OPC 40501 MachineOperationMode
ITEM_NOT_AVAILABLE, ITEM_OUT_OF_SERVICE, ITEM_NOT_EXECUTING, ITEM_EXECUTING = 0, 1, 2, 3
PROGRAM_RUNNING, PROGRAM_ENDED, PROGRAM_INTERRUPTED, PROGRAM_ABORTED = 1, 2, 3, 4
CNC_STOPPED, CNC_RUNNING, CNC_ABORTED = 0, 1, 4
CNC_MANUAL, CNC_AUTOMATIC = 0, 2  # OPC 40502 CncOperationMode (1 is MDA)

_V = ua.VariantType
# path under Machines/<id> -> variant type; the order is the build order.
NODES: dict[str, ua.VariantType] = {
    "Identification/Manufacturer": _V.String,
    "Identification/Model": _V.String,
    "Identification/SerialNumber": _V.String,
    "Monitoring/MachineTool/OperationMode": _V.Int32,
    "Monitoring/MachineTool/MachineryItemState": _V.Int32,
    "Monitoring/MachineTool/AlarmCode": _V.Int32,
    "Monitoring/Spindle/IsRotating": _V.Boolean,
    "Monitoring/Spindle/IsUsedAsAxis": _V.Boolean,
    "Monitoring/Spindle/Override": _V.Double,
    "Production/ActiveProgram/Name": _V.String,
    "Production/ActiveProgram/State": _V.Int32,
    "Production/PartsProduced": _V.UInt32,
    "Production/PartsRejected": _V.UInt32,
    "CncInterface/Channel1/ActProgramStatus": _V.Int32,
    "CncInterface/Channel1/ActOperationMode": _V.Int32,
    "CncInterface/Channel1/ActMainProgramName": _V.String,
    "CncInterface/Channel1/FeedOverride": _V.Double,
    "CncInterface/Spindle1/ActOverride": _V.Double,
}

# state -> (OperationMode, MachineryItemState, ActiveProgram.State, IsRotating, ActProgramStatus,
# ActOperationMode)
_STATE_SIGNALS: dict[State, tuple[int, int, int, bool, int, int]] = {
    State.RUNNING: (MODE_AUTOMATIC, ITEM_EXECUTING, PROGRAM_RUNNING, True, CNC_RUNNING, CNC_AUTOMATIC),
    State.IDLE: (MODE_AUTOMATIC, ITEM_NOT_EXECUTING, PROGRAM_ENDED, False, CNC_STOPPED, CNC_AUTOMATIC),
    State.PLANNED_STOP: (MODE_AUTOMATIC, ITEM_NOT_EXECUTING, PROGRAM_ENDED, False, CNC_STOPPED, CNC_AUTOMATIC),
    State.SETUP: (MODE_SETUP, ITEM_NOT_EXECUTING, PROGRAM_INTERRUPTED, False, CNC_STOPPED, CNC_MANUAL),
    State.FAULT: (MODE_AUTOMATIC, ITEM_OUT_OF_SERVICE, PROGRAM_ABORTED, False, CNC_ABORTED, CNC_AUTOMATIC),
    State.NOT_SCHEDULED: (MODE_AUTOMATIC, ITEM_NOT_AVAILABLE, PROGRAM_ENDED, False, CNC_STOPPED, CNC_AUTOMATIC),
}


def node_id(machine_id: str, path: str) -> ua.NodeId:
    return ua.NodeId(f"{machine_id}/{path}", NAMESPACE_INDEX)


def cnc_values(s: Snapshot, spindle_override: float) -> dict[str, Any]:
    """The dynamic node values (by path) of a CNC in the snapshot's state."""
    mode, item, program_state, rotating, prog_status, cnc_mode = _STATE_SIGNALS[s.state]
    return {
        "Monitoring/MachineTool/OperationMode": mode,
        "Monitoring/MachineTool/MachineryItemState": item,
        "Monitoring/MachineTool/AlarmCode": s.interval.fault_code,
        "Monitoring/Spindle/IsRotating": rotating,
        "Monitoring/Spindle/IsUsedAsAxis": False,
        "Monitoring/Spindle/Override": spindle_override,
        "Production/ActiveProgram/Name": s.interval.program,
        "Production/ActiveProgram/State": program_state,
        "Production/PartsProduced": s.parts % 2**32,
        "Production/PartsRejected": s.scrap % 2**32,
        "CncInterface/Channel1/ActProgramStatus": prog_status,
        "CncInterface/Channel1/ActOperationMode": cnc_mode,
        "CncInterface/Channel1/ActMainProgramName": s.interval.program,
        "CncInterface/Channel1/FeedOverride": spindle_override,
        "CncInterface/Spindle1/ActOverride": spindle_override,
    }


SECURE_POLICIES = [
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
]


class _PasswordUsers(UserManager):
    """Accepts only the configured username/password pairs."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        expected = self._users.get(username or "")
        if expected is None or password is None or not hmac.compare_digest(expected.encode(), password.encode()):
            return None
        return User(role=UserRole.User, name=username)


class CncServer:
    def __init__(
        self,
        plant: MachinePlant,
        clock: Clock,
        host: str,
        port: int,
        update_interval_s: float = 0.02,
        *,
        pki_dir: Path | None = None,
        users: Mapping[str, str] | None = None,
    ) -> None:
        """pki_dir: offer only the signed and encrypted endpoints, with a certificate kept in pki_dir/own/, to
        clients whose certificate is in pki_dir/trusted/ (read at each session). users: username -> password,
        the only identities accepted (no anonymous access)."""
        self.plant = plant
        self.pki_dir = pki_dir
        self.users = users
        self.clock = clock
        self.url = f"opc.tcp://{host}:{port}/"
        self.update_interval_s = update_interval_s
        # The phase's slowdown shows as the operator's feed override (100 % = ideal cycle).
        self.spindle_override = round(100.0 / (1.0 + plant.phase.slowdown), 1)
        self._server: Server | None = None
        self._last: dict[str, Any] = {}

    async def start(self) -> None:
        mid = self.plant.machine_id
        server = Server(user_manager=_PasswordUsers(self.users) if self.users is not None else None)
        await server.init()  # ~2 s of CPU: asyncua builds the standard address space in Python
        server.set_endpoint(self.url)
        server.set_server_name(f"edgeproof simulated CNC {mid}")
        # The application URI takes namespace index 1, so it must differ from the namespace URI.
        app_uri = f"{NAMESPACE_URI}:{mid}"
        await server.set_application_uri(app_uri)
        if self.users is not None:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        if self.pki_dir is None:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            await self._secure(server, self.pki_dir, app_uri)
        idx = await server.register_namespace(NAMESPACE_URI)
        if idx != NAMESPACE_INDEX:
            raise RuntimeError(f"namespace {NAMESPACE_URI} got index {idx}, expected {NAMESPACE_INDEX}")
        machines = await server.nodes.objects.add_folder(ua.NodeId("Machines", idx), ua.QualifiedName("Machines", idx))
        root = await machines.add_object(ua.NodeId(mid, idx), ua.QualifiedName(mid, idx))
        ident = self.plant.machine.identification
        initial = {
            "Identification/Manufacturer": ident.manufacturer,
            "Identification/Model": ident.model,
            "Identification/SerialNumber": ident.serial_number,
            **cnc_values(self.plant.snapshot(self.clock.now()), self.spindle_override),
        }
        folders: dict[str, Node] = {"": root}
        for path, vtype in NODES.items():
            parent_path, _, name = path.rpartition("/")
            parent = await self._folder(folders, parent_path)
            await parent.add_variable(node_id(mid, path), ua.QualifiedName(name, idx), ua.Variant(initial[path], vtype))
        self._server = server
        await self.refresh()
        await server.start()

    @staticmethod
    async def _secure(server: Server, pki_dir: Path, app_uri: str) -> None:
        own, trusted = pki_dir / "own", pki_dir / "trusted"
        for folder in (own, trusted):
            folder.mkdir(parents=True, exist_ok=True)
        cert, key = own / "cert.der", own / "key.pem"
        await setup_self_signed_certificate(
            key,
            cert,
            app_uri,
            socket.gethostname(),
            [ExtendedKeyUsageOID.SERVER_AUTH],
            {"organizationName": "edgeproof simulator"},
        )
        await server.load_certificate(cert)
        await server.load_private_key(key)
        server.set_security_policy(SECURE_POLICIES)
        store = TrustStore([trusted], [])
        validator = CertificateValidator(
            CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT, store
        )

        async def check_client(client_cert: x509.Certificate, client: ua.ApplicationDescription) -> None:
            await store.load_trust()  # a certificate copied into trusted/ counts from the next session
            await validator.validate(client_cert, client)

        server.set_certificate_validator(check_client)

    async def _folder(self, folders: dict[str, Node], path: str) -> Node:
        if path not in folders:
            parent_path, _, name = path.rpartition("/")
            parent = await self._folder(folders, parent_path)
            mid = self.plant.machine_id
            folders[path] = await parent.add_object(node_id(mid, path), ua.QualifiedName(name, NAMESPACE_INDEX))
        return folders[path]

    async def refresh(self) -> None:
        assert self._server is not None
        now: datetime = self.clock.now()
        for path, value in cnc_values(self.plant.snapshot(now), self.spindle_override).items():
            if self._last.get(path, _UNSET) == value:
                continue
            dv = ua.DataValue(ua.Variant(value, NODES[path]), SourceTimestamp=now)
            await self._server.write_attribute_value(node_id(self.plant.machine_id, path), dv)
            self._last[path] = value

    async def run_updates(self) -> None:
        while True:
            await asyncio.sleep(self.update_interval_s)
            await self.refresh()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None


_UNSET = object()
