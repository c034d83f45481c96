"""Shared pytest setup: the repository root on sys.path, so `deploykit` and `sandbox` import."""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
