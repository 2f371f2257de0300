#!/usr/bin/env python3
"""Send a Caisse-AP over IP payment request from a plain checkout."""

import os
import sys

# Let `python3 caisse-ap-ip-client.py` find the package beside this script
# without installing it. The client path imports no Twisted, to start fast.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from caisse_ap.client_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
