"""A plug-in module that ends the process while it is imported (tests/faults/test_plugin_faults.py)."""

import sys

sys.exit(4)
