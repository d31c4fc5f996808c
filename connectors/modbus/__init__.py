"""Modbus acquisition: codec, request planner, shared links (TCP, RTU, RTU over TCP), devices."""

from connectors.modbus.config import ModbusDeviceConfig, ModbusTag
from connectors.modbus.device import ModbusDevice
from connectors.modbus.link import ModbusLink

__all__ = ["ModbusDevice", "ModbusDeviceConfig", "ModbusLink", "ModbusTag"]
