"""Every setting is declared once, with its comment, and docs/settings.md is generated
from those declarations."""

import runpy
from pathlib import Path

import pytest

from deploykit.declarations import DeclarationError, all_declarations, parse_defaults

ROOT = Path(__file__).resolve().parents[2]


def test_docs_settings_is_generated_from_the_declarations():
    generator = runpy.run_path(str(ROOT / "bin" / "settings-doc"))
    assert (ROOT / "docs" / "settings.md").read_text() == generator["document"](), (
        "run bin/settings-doc"
    )


def test_every_setting_has_a_comment_and_is_declared_once():
    keys = [s.key for d in all_declarations() for s in d.settings]
    assert sorted(k for k in set(keys) if keys.count(k) > 1) == []
    assert [s.key for d in all_declarations() for s in d.settings if not s.comment] == []


def test_a_comment_above_two_keys_describes_both_and_a_blank_line_ends_it():
    settings = parse_defaults(
        "DEFAULTS = {\n"
        "    # Size and count of rotated logs.\n"
        '    "x_size": "10m",\n'
        '    "x_files": [\n'
        "        # not a comment of a key\n"
        "        5,\n"
        "    ],\n"
        "\n"
        '    "x_bare": 1,\n'
        "}\n",
        "x.py",
    )
    assert [(s.key, s.default, s.comment) for s in settings] == [
        ("x_size", "10m", "Size and count of rotated logs."),
        ("x_files", [5], "Size and count of rotated logs."),
        ("x_bare", 1, ""),
    ]


def test_a_default_that_is_not_a_literal_is_refused_naming_the_line():
    with pytest.raises(DeclarationError, match=r"x.py:3: the default of 'x_port' is not a"):
        parse_defaults('PORT = 80\nDEFAULTS = {\n    "x_port": PORT,\n}\n', "x.py")
