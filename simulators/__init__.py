"""Simulated plant: a seeded, deterministic plant model served over real Modbus TCP and OPC UA on
loopback, with the ground truth of what happened (docs/simulators.md)."""
