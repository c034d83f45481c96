"""app/README.md lists what app/Makefile builds: the tags of `make images`, each in the
images table, and the Makefile's own header says the same."""

from __future__ import annotations

import re

from deploykit.paths import REPO_ROOT

MAKEFILE = (REPO_ROOT / "app" / "Makefile").read_text()
README = (REPO_ROOT / "app" / "README.md").read_text()


def image_tags() -> list[str]:
    match = re.search(r"^IMAGE_TAGS \?= (.+)$", MAKEFILE, re.M)
    assert match, "app/Makefile has no IMAGE_TAGS ?= line"
    return match.group(1).split()


def spoken(tags: list[str]) -> str:
    """v1, v2, broken and late-fail"""
    return ", ".join(tags)


def test_the_readme_states_the_makefiles_image_tags():
    assert f"`IMAGE_TAGS ?= {' '.join(image_tags())}`" in README


def test_every_image_tag_has_a_row_in_the_readmes_images_table():
    rows = [line for line in README.splitlines() if line.startswith("| `app:")]
    listed = set(re.findall(r"`app:([^`]+)`", "\n".join(rows)))
    assert listed == set(image_tags())


def test_make_images_is_described_with_every_tag():
    described = f"build + push app {spoken(image_tags())} and nginx"
    assert described in README
    assert described in MAKEFILE
