"""Where the repository keeps what lands on hosts."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = REPO_ROOT / "templates"
GROUP_DATA_DIR = REPO_ROOT / "group_data"
