#!/usr/bin/env python3
"""Start the simulated Caisse-AP over IP payment terminal from a plain checkout."""

import os
import sys

# Let `python3 caisse-ap-ip-server.py` find the package beside this script
# without installing it.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from caisse_ap.terminal.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
