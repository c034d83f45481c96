import pytest

from sandbox.cluster import Topology, _host_ports


def test_default_topology_in_inventory_order():
    assert Topology.from_environ({}).hosts() == [
        ("lb1", "lb"),
        ("web1", "web"),
        ("web2", "web"),
        ("web3", "web"),
        ("job1", "job"),
        ("db1", "db"),
    ]


def test_web_count_and_second_lb():
    hosts = Topology.from_environ({"SANDBOX_WEB": "8", "SANDBOX_LB": "2"}).hosts()
    assert [name for name, group in hosts if group == "web"] == [f"web{i}" for i in range(1, 9)]
    assert [name for name, group in hosts if group == "lb"] == ["lb1", "lb2"]


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"SANDBOX_WEB": "three"}, "SANDBOX_WEB='three' is not a whole number"),
        ({"SANDBOX_WEB": "0"}, "SANDBOX_WEB=0 is out of range 1..16"),
        ({"SANDBOX_LB": "3"}, "SANDBOX_LB=3 is out of range 1..2"),
    ],
)
def test_bad_counts_are_refused(environ, message):
    with pytest.raises(SystemExit, match=message):
        Topology.from_environ(environ)


def test_load_balancers_publish_http_and_https_on_loopback():
    assert _host_ports("lb1", "lb") == {
        "22/tcp": ("127.0.0.1", 2201),
        "80/tcp": ("127.0.0.1", 8080),
        "443/tcp": ("127.0.0.1", 8443),
    }
    assert _host_ports("lb2", "lb") == {
        "22/tcp": ("127.0.0.1", 2202),
        "80/tcp": ("127.0.0.1", 8081),
        "443/tcp": ("127.0.0.1", 8444),
    }


def test_growing_a_group_never_moves_another_groups_ports():
    assert _host_ports("web1", "web") == {"22/tcp": ("127.0.0.1", 2211)}
    assert _host_ports("web16", "web") == {"22/tcp": ("127.0.0.1", 2226)}
    assert _host_ports("job1", "job") == {"22/tcp": ("127.0.0.1", 2241)}
    assert _host_ports("db1", "db") == {"22/tcp": ("127.0.0.1", 2251)}


def test_hosts_run_debian_13_unless_told_otherwise():
    topology = Topology.from_environ({})
    assert topology.release == "trixie" and topology.releases() == ["trixie"]
    bookworm = Topology.from_environ({"SANDBOX_RELEASE": "bookworm"})
    assert bookworm.release_of("web1") == "bookworm" and bookworm.releases() == ["bookworm"]


def test_a_release_per_host_for_a_fleet_in_the_middle_of_an_upgrade():
    topology = Topology.from_environ({"SANDBOX_RELEASES": "web1=bookworm, db1=trixie"})
    assert topology.release_of("web1") == "bookworm"
    assert topology.release_of("web2") == "trixie"
    assert topology.releases() == ["trixie", "bookworm"]


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"SANDBOX_RELEASE": "jessie"}, "SANDBOX_RELEASE='jessie' is not a known release"),
        ({"SANDBOX_RELEASES": "web1"}, "SANDBOX_RELEASES item 'web1' is not HOST=RELEASE"),
        ({"SANDBOX_RELEASES": "web1=sid"}, "SANDBOX_RELEASES web1='sid' is not a known release"),
        ({"SANDBOX_RELEASES": "web9=bookworm"}, "names 'web9', which is not in the topology"),
    ],
)
def test_bad_releases_are_refused(environ, message):
    with pytest.raises(SystemExit, match=message):
        Topology.from_environ(environ)
