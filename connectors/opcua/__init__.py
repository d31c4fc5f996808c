"""OPC UA connector: configuration, security, device acquisition, machine-tool models, probe."""

from connectors.opcua.config import OpcUaDeviceConfig, OpcUaSecurity, OpcUaTag
from connectors.opcua.device import OpcUaDevice

__all__ = ["OpcUaDevice", "OpcUaDeviceConfig", "OpcUaSecurity", "OpcUaTag"]
