"""`sandbox down` of one instance leaves the work tree's state of another alone."""

import json

from sandbox import cluster


def test_the_state_files_instance_is_read_from_its_container_prefix(tmp_path, monkeypatch):
    state = tmp_path / "cluster.json"
    monkeypatch.setattr(cluster, "STATE_FILE", state)
    assert cluster._state_file_instance_prefix() is None
    state.write_text("not json")
    assert cluster._state_file_instance_prefix() is None
    state.write_text(json.dumps({"container_prefix": "deploykit-elsewhere-"}))
    assert cluster._state_file_instance_prefix() == "deploykit-elsewhere-"
