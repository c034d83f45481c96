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
