"""Every knob appears in the README's Settings section, with its default."""

from pathlib import Path

from deploykit.config import Schema

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_readme_settings_tables_are_generated_from_the_defaults():
    import runpy

    generator = runpy.run_path(str(Path(__file__).resolve().parents[2] / "bin" / "settings-doc"))
    for module in generator["MODULES"]:
        assert generator["table"](module) in README, f"run bin/settings-doc ({module})"


def test_every_default_is_documented_in_the_readme():
    settings = README[README.index("## Settings") :]
    missing = [key for key in Schema.build().defaults if f"`{key}`" not in settings]
    assert missing == []
