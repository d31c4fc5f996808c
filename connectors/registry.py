"""Open connector devices from their configurations; Modbus devices on one endpoint share a link."""

from __future__ import annotations

from collections.abc import Iterable

from connectors.modbus.config import ModbusDeviceConfig
from connectors.modbus.device import ModbusDevice
from connectors.modbus.link import ModbusLink
from connectors.opcua import OpcUaDevice, OpcUaDeviceConfig

Device = ModbusDevice | OpcUaDevice


def open_devices(configs: Iterable[ModbusDeviceConfig | OpcUaDeviceConfig]) -> dict[str, Device]:
    links: dict[tuple[str, str], ModbusLink] = {}
    devices: dict[str, Device] = {}
    for cfg in configs:
        if isinstance(cfg, ModbusDeviceConfig):
            link = links.setdefault(cfg.link_key, ModbusLink(cfg))
            devices[cfg.id] = ModbusDevice(cfg, link)
        else:
            devices[cfg.id] = OpcUaDevice(cfg)
    return devices
