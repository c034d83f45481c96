"""A fake pyinfra host and state, in the manner of pyinfra's own operation tests.

Facts are given up front (keyed by fact class name, then by the fact's arguments), an
operation's generator is run with `op._inner(...)`, and the test compares the exact
commands it yields, or the no-op message it leaves.
"""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from types import SimpleNamespace

from pyinfra.api import FileUploadCommand, FunctionCommand, StringCommand
from pyinfra.context import ctx_host, ctx_state


class FakeData(dict):
    def __getattr__(self, key):
        return self.get(key)


class FakeHost:
    def __init__(self, name="web1", facts=None, data=None, groups=()):
        self.name = name
        self.facts = facts or {}
        self.data = FakeData(data or {})
        self.groups = list(groups)
        self.noop_reason: str | None = None
        self.current_op_global_arguments = {}

    def get_fact(self, fact_class, **kwargs):
        value = self.facts.get(fact_class.__name__)
        if kwargs and isinstance(value, dict) and _key(kwargs) in value:
            return value[_key(kwargs)]
        if kwargs and isinstance(value, dict):
            return value.get("*")
        return value

    def noop(self, description):
        self.noop_reason = description

    def log(self, *args, **kwargs):
        pass


def _key(kwargs):
    return next(iter(kwargs.values())) if len(kwargs) == 1 else tuple(sorted(kwargs.items()))


@contextmanager
def fake_context(host: FakeHost, diff: bool = False):
    state = SimpleNamespace(config=SimpleNamespace(DIFF=diff))
    with ctx_state.use(state), ctx_host.use(host):
        yield


def run_operation(operation, host: FakeHost, *args, **kwargs) -> list:
    with fake_context(host):
        return list(operation._inner(*args, **kwargs))


def command_texts(commands) -> list[str]:
    """Commands as the text a reviewer reads: shell lines, uploads and callbacks named."""
    texts = []
    for command in commands:
        if isinstance(command, StringCommand):
            texts.append(command.get_raw_value())
        elif isinstance(command, FileUploadCommand):
            via = f" via {command.remote_temp_filename}" if command.remote_temp_filename else ""
            texts.append(f"upload {command.dest}{via}")
        elif isinstance(command, FunctionCommand):
            texts.append(f"call {command.function.__name__}{tuple(command.args)}")
        else:
            texts.append(repr(command))
    return texts


def waited_ms(stdout: str) -> int:
    """The one `waited_ms=` a host-side wait script prints."""
    lines = [line for line in stdout.splitlines() if line.startswith("waited_ms=")]
    assert len(lines) == 1, stdout
    return int(lines[0].removeprefix("waited_ms="))


def install_stubs(folder, tools: dict[str, str]):
    """Fake executables (name -> script text) in folder/bin; returns that folder."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in tools.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def run_with_stubs(script: str, bin_dir, stub_dir) -> subprocess.CompletedProcess:
    """Run a generated script with `sh -c`, as pyinfra does, the stubs first on PATH."""
    return subprocess.run(
        ["sh", "-c", script],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB_DIR": str(stub_dir)},
        capture_output=True,
        text=True,
        timeout=20,
    )
