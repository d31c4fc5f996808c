"""`python -m cloud_ingest ingest|report ...`."""

import sys

from cloud_ingest.cli import main

sys.exit(main())
