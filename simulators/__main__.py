"""`python -m simulators`: serve one phase of a scenario over Modbus TCP and OPC UA."""

import sys

from simulators.cli import main

sys.exit(main())
