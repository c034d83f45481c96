"""Facts whose output holds secrets are never printed, whatever the verbosity: pyinfra
prints every fact's output at -vvv (State.print_fact_output), so the kit turns that off
for the length of such a read, and the reads of several hosts' greenlets may overlap."""

from __future__ import annotations

from types import SimpleNamespace

from pyinfra.context import ctx_state

from deploykit.facts import get_secret_fact, output_not_printed
from deploykit.operations.postgres import role_and_database
from tests.unit.fakes import FakeHost, fake_context


class RecordingHost(FakeHost):
    """Notes whether pyinfra would print the output of each fact it is asked for."""

    def __init__(self, run_state, **kwargs):
        super().__init__(**kwargs)
        self.run_state = run_state
        self.printed: list[tuple[str, bool]] = []

    def get_fact(self, fact_class, **kwargs):
        self.printed.append((fact_class.__name__, self.run_state.print_fact_output))
        return super().get_fact(fact_class, **kwargs)


def test_a_secret_fact_is_read_with_fact_output_printing_off_then_back_on():
    run = SimpleNamespace(print_fact_output=True)  # -vvv
    host = RecordingHost(run, facts={"FileContents": ["PASSWORD=x"]})
    with ctx_state.use(run):
        from pyinfra.facts.files import FileContents

        assert get_secret_fact(host, FileContents, path="/etc/app.env") == ["PASSWORD=x"]
        host.get_fact(FileContents, path="/etc/app.env")
    assert host.printed == [("FileContents", False), ("FileContents", True)]
    assert run.print_fact_output is True


def test_overlapping_reads_turn_printing_back_on_only_after_the_last_one():
    run = SimpleNamespace(print_fact_output=True)
    with ctx_state.use(run):
        first = output_not_printed()
        second = output_not_printed()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert run.print_fact_output is False  # the second read is still going on
        second.__exit__(None, None, None)
    assert run.print_fact_output is True


def test_without_verbosity_printing_stays_off():
    run = SimpleNamespace(print_fact_output=False)
    with ctx_state.use(run):
        with output_not_printed():
            assert run.print_fact_output is False
    assert run.print_fact_output is False


def test_the_postgres_roles_scram_verifier_is_read_unprinted():
    run = SimpleNamespace(print_fact_output=True, config=SimpleNamespace(DIFF=False))
    host = RecordingHost(run, facts={"PostgresRoleState": None})
    with fake_context(host), ctx_state.use(run):
        list(role_and_database._inner(role="app", database="app", password="pw"))
    assert host.printed == [("PostgresRoleState", False)]


def test_the_live_file_a_diff_reads_is_read_unprinted():
    from deploykit.operations.config_file import config_file

    dest = "/etc/deploykit/app.env"
    run = SimpleNamespace(print_fact_output=True, config=SimpleNamespace(DIFF=True))
    host = RecordingHost(
        run,
        facts={
            "File": {dest: {"mode": 600, "user": "root", "group": "root"}},
            "Sha1File": {dest: "0" * 40},
            "FileContents": {dest: ["PASSWORD=old"]},
        },
    )
    with fake_context(host, diff=True), ctx_state.use(run):
        list(config_file._inner(content="PASSWORD=new\n", dest=dest, secrets=["new"]))
    assert ("FileContents", False) in host.printed
    assert ("FileContents", True) not in host.printed
