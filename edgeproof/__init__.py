"""edgeproof: shared kernel (clock, message contract, indicator maths, config loading, CLI)."""

__version__ = "0.1.0"
