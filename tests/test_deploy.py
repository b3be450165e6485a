"""Flower's deployment engine on loopback: TLS, SuperNode authentication, a crashed node.

One deployment (``dfflab.federated.deploy.deploy_local``, about two minutes on 2 busy
cores: every ClientApp message starts a fresh process) serves every test here: a
SuperLink with TLS and ``--enable-supernode-auth``, 3 registered SuperNodes on the
tiny store, a SuperNode with an unregistered key (refused), 2 rounds; SuperNode 2 is
SIGKILLed while it trains in round 1 and restarted once the SuperLink has marked it
offline. With ``fl.min-nodes=2`` the round goes on with the other two; round 2 waits
(``fl.wait-nodes``) for the restarted node, which rejoins with its node id; client 0
raises in round 2 (``fl.fail-client``) and is left out of it. Clients skip their own
validation (``fl.fraction-evaluate=0``) to halve the process starts.
"""

import csv
from pathlib import Path

import pytest
from conftest import tiny
from cryptography import x509

from dfflab.federated.deploy import deploy_local
from dfflab.federated.processes import alive, cmdline, processes_with_env

pytestmark = pytest.mark.slow  # minutes: left out of `pytest -m "not slow"`

# s: healthy clients answer in ~35 s here; a killed one never does (the SuperLink
# reports it unavailable after 2 missed 30 s heartbeats, whichever comes first)
ROUND_TIMEOUT = 90


@pytest.fixture(scope="module")
def deployed(store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy")
    cfg = tiny(store, tmp, "fl.rounds=2", "fl.num-partitions=3", "fl.partitioning=source", "fl.min-nodes=2",
               f"fl.round-timeout={ROUND_TIMEOUT}", "fl.wait-nodes=60", "fl.fraction-evaluate=0",
               "fl.fail-client=0", "fl.fail-round=2")
    run = deploy_local(cfg, name="deploy-test", progress=False, kill=(2, 1))
    return run, run.record["deploy"]


def test_tls_authenticated_federation_completes_two_rounds(deployed):
    run, dep = deployed
    assert dep["returncode"] == 0
    assert [r["round"] for r in run.metrics()] == [0, 1, 2] and run.summary()["rounds_run"] == 2
    link = next(p["cmd"] for p in dep["stopped"] if "flower-superlink" in p["cmd"])
    assert "--ssl-certfile" in link and "--enable-supernode-auth" in link and "--insecure" not in link
    nodes = [p["cmd"] for p in dep["stopped"] if "flower-supernode" in p["cmd"]]
    assert nodes and all("--root-certificates" in c and "--auth-supernode-private-key" in c for c in nodes)
    cert = x509.load_pem_x509_certificate(Path(dep["tls"]["cert"]).read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert len(set(dep["nodes"].values())) == 3  # each SuperNode registered with its own key


def test_unregistered_supernode_is_refused(deployed):
    run, dep = deployed
    un = dep["unregistered"]
    assert un["refused"] and un["returncode"] not in (None, 0), un
    link = (run.path("deploy") / "superlink.log").read_text()
    assert "No SuperNode found with the given public key" in link
    # and it never took part: every aggregated update came from a registered node id
    registered = {str(v) for v in dep["nodes"].values()}
    for row in run.metrics()[1:]:
        assert set(str(row["nodes"]).split(";")) <= registered


def test_killed_supernode_round_goes_on_and_restarted_node_rejoins(deployed):
    run, dep = deployed
    events = [e["event"] for e in dep["events"]]
    assert events == ["killed", "restarted"], dep["events"]
    rows = {r["round"]: r for r in run.metrics()}
    assert str(rows[1]["clients"]) == "0;1" and rows[1]["failures"] >= 1  # node 2 died mid-round
    assert str(rows[2]["clients"]) == "1;2"  # the restarted node 2 took part again; 0 raised
    assert str(rows[2]["nodes"]).split(";")[1] == str(dep["nodes"]["2"])  # as itself (same key, same id)
    with open(run.path("clients.csv"), newline="") as f:
        failed = [r for r in csv.DictReader(f) if r["round"] == "1" and r.get("error")]
    # the SuperLink's "Node Unavailable" (missed heartbeats) or no reply by fl.round-timeout
    assert [int(r["node"]) for r in failed] == [dep["nodes"]["2"]], failed
    assert any(k in failed[0]["error"] for k in ("Node Unavailable", "no reply")), failed


def test_client_that_raises_is_left_out_of_its_round(deployed):
    run, dep = deployed
    with open(run.path("clients.csv"), newline="") as f:
        failed = [r for r in csv.DictReader(f) if r["round"] == "2" and r.get("error")]
    assert [int(r["node"]) for r in failed] == [dep["nodes"]["0"]], failed
    assert "failure injected by fl.fail-client in round 2" in failed[0]["error"]
    assert run.summary()["failures"] == 2  # node 2 in round 1, client 0 in round 2


def test_deployment_leaves_no_process_behind(deployed):
    _, dep = deployed
    assert dep["still_running"] == []
    pids = [p["pid"] for p in dep["stopped"]] + dep["events"][0]["pids"]
    assert len(dep["stopped"]) >= 5  # SuperLink, its SuperExec, 3 SuperNodes (+ their SuperExecs)
    cmds = {p["pid"]: p["cmd"] for p in dep["stopped"]}
    for pid in pids:
        assert not alive(pid) or cmdline(pid) != cmds.get(pid, ""), pid  # gone (or the pid was reused)
    assert processes_with_env(dep["mark"], dep["id"]) == []
