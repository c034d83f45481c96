"""The integration harness's report of a failed pyinfra run."""

from bench.harness import RunResult


def test_a_failed_runs_excerpt_names_the_error_and_keeps_the_results_table():
    noise = [f"    [web1] Success op {number}" for number in range(400)]
    output = "\n".join(
        [
            *noise[:200],
            "    [db1] Error: executed 1 commands",
            "    [db1] createuser: role already exists",
            *noise[200:],
            "    Grand total    358   284   18   56",
        ]
    )
    excerpt = RunResult(1, output).failure_excerpt()
    assert "[db1] Error: executed 1 commands" in excerpt
    assert "createuser: role already exists" in excerpt
    assert excerpt.rstrip().endswith("Grand total    358   284   18   56")
    assert "Success op 150" not in excerpt


def test_changed_operations_names_each_host_and_operation_that_changed():
    output = "\n".join(
        [
            "--> Beginning operation run...",
            "\x1b[34m--> Starting operation:\x1b[0m \x1b[1mRedis | Ensure it is installed\x1b[0m",
            "    [\x1b[1mdb1\x1b[0m] \x1b[36mNo changes\x1b[0m",
            "--> Starting serial operation: Web host TLS | Ensure the key is installed",
            "    [web1]  \x1b[32mSuccess\x1b[0m",
            "    [web2]  No changes",
            "    [web3]  Success on retry 1",
            "    Grand total    368   2   -   366",
        ]
    )
    assert RunResult(0, output).changed_operations() == [
        "[web1] Web host TLS | Ensure the key is installed",
        "[web3] Web host TLS | Ensure the key is installed",
    ]
