"""Configuration of a Modbus device and its tags (validated; see docs/configuration.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.modbus.codec import WIDTH, ByteOrder, DataType, StringOrder

Area = Literal["holding", "input", "coil", "discrete"]
Transport = Literal["tcp", "rtu", "rtu_over_tcp"]
BIT_AREAS: tuple[Area, ...] = ("coil", "discrete")


class ModbusTag(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    area: Area
    address: int = Field(ge=0, le=65535, description="as the device's manual numbers it (see address_base)")
    type: DataType = "uint16"
    order: ByteOrder | None = Field(None, description="overrides the device's byte order for this tag")
    bit: int | None = Field(None, ge=0, le=15, description="bool from one bit of a register, 0 = least significant")
    length: int | None = Field(None, ge=1, le=125, description="string length in registers (2 bytes each)")
    string_order: StringOrder = Field("AB", description="AB: first character in the high byte; BA: in the low")
    encoding: str = "ascii"
    scale: float = 1.0
    offset: float = 0.0
    poll_interval_s: float | None = Field(None, gt=0, description="overrides the device's poll interval")

    @model_validator(mode="after")
    def _consistent(self) -> ModbusTag:
        if self.area in BIT_AREAS:
            if self.type != "bool" or self.bit is not None:
                raise ValueError(f"{self.area} tags are single bits: type bool, no bit")
        elif self.type == "bool" and self.bit is None:
            raise ValueError("a bool from a register needs bit (0-15)")
        elif self.type != "bool" and self.bit is not None:
            raise ValueError("bit is only for type bool")
        if (self.type == "string") != (self.length is not None):
            raise ValueError("length is required for type string, and only for it")
        return self

    @property
    def width(self) -> int:
        """Registers (or bits) the tag occupies."""
        if self.type == "string":
            assert self.length is not None
            return self.length
        return 1 if self.area in BIT_AREAS else WIDTH[self.type]


class ModbusDeviceConfig(BaseModel):
    """One Modbus unit. Devices that name the same endpoint (host:port or serial port) share one
    link and take turns on it, one transaction at a time."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    protocol: Literal["modbus"]
    transport: Transport = Field("tcp", description="tcp, rtu (serial port) or rtu_over_tcp (serial server)")
    host: str | None = None
    port: int = Field(502, ge=1, le=65535)
    serial_port: str | None = Field(None, description="e.g. /dev/ttyUSB0 or COM3, for transport rtu")
    baudrate: int = Field(9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    unit: int = Field(1, ge=0, le=255, description="Modbus unit / slave / device id")
    address_base: Literal[0, 1] = Field(0, description="1 if the manual numbers the first register 1")
    order: ByteOrder = Field("ABCD", description="byte order of multi-byte values")
    timeout_s: float = Field(1.0, gt=0, description="per request")
    retries: int = Field(0, ge=0, le=5, description="extra attempts after a timeout, within one poll")
    request_delay_s: float = Field(0.0, ge=0, description="pause before each request on the link (slow devices)")
    poll_interval_s: float = Field(1.0, gt=0, description="wall seconds between polls")
    max_registers: int = Field(125, ge=1, le=125, description="largest register read the device accepts")
    max_bits: int = Field(2000, ge=1, le=2000, description="largest coil / discrete-input read")
    max_gap: int = Field(
        32, ge=0, description="unused registers a read may span to merge two tags (a request costs far more)"
    )
    coalesce: bool = Field(True, description="false: one request per tag (devices that reject larger reads)")
    backoff_max_s: float = Field(60.0, gt=0, description="longest wait between retries of a silent device")
    tags: list[ModbusTag] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> ModbusDeviceConfig:
        if self.transport == "rtu" and not self.serial_port:
            raise ValueError("transport rtu needs serial_port")
        if self.transport != "rtu" and not self.host:
            raise ValueError(f"transport {self.transport} needs host")
        for tag in self.tags:
            if tag.address < self.address_base:
                raise ValueError(f"tag {tag.name}: address {tag.address} is below address_base {self.address_base}")
            limit = self.max_bits if tag.area in BIT_AREAS else self.max_registers
            if tag.width > limit:
                raise ValueError(f"tag {tag.name}: {tag.width} registers exceed the device's read limit {limit}")
        return self

    @property
    def link_key(self) -> tuple[str, str]:
        """Devices with the same key share one link."""
        if self.transport == "rtu":
            assert self.serial_port is not None
            return ("serial", self.serial_port)
        return (self.transport, f"{self.host}:{self.port}")

    def protocol_address(self, tag: ModbusTag) -> int:
        return tag.address - self.address_base

    def tag_order(self, tag: ModbusTag) -> ByteOrder:
        return tag.order or self.order
