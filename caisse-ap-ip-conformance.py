#!/usr/bin/env python3
"""Put a point of sale through the Caisse-AP conformance kit from a plain checkout."""

import os
import sys

# Let `python3 caisse-ap-ip-conformance.py` find the package beside this script
# without installing it.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from caisse_ap.conformance.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
