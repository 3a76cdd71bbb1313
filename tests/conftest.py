"""pytest's entry to the black-box suites: tests/lib/harness_pytest.py holds the hooks and fixtures."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))

from harness_pytest import *  # noqa: E402,F401,F403  (hooks and fixtures are found by name here)
