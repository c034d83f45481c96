"""Every knob appears in the README's Settings section, with its default."""

from pathlib import Path

from deploykit.config import Schema

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_default_is_documented_in_the_readme():
    settings = README[README.index("## Settings") :]
    missing = [key for key in Schema.build().defaults if f"`{key}`" not in settings]
    assert missing == []
