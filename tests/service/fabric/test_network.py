"""``receipt-service fabric up | status | env | down`` on a real network of plain processes."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from receipt_service.fabric.network import CHANNELS, Network, NetworkError

CLI = [sys.executable, "-m", "receipt_service._cli", "fabric"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, check=False)


def test_up_again_only_checks_a_running_network(net: Network) -> None:
    pids = {n.name: net.pid(n) for n in net.layout.nodes}
    out = _cli("up", "--dir", str(net.layout.root))
    assert out.returncode == 0, out.stderr
    n = len(net.layout.nodes)
    assert f"processes: {n} of {n} running" in out.stderr
    assert "0 channel joins" in out.stderr and "installing" not in out.stderr
    assert out.stdout.strip() == str(net.layout.root / "receipt-service.toml")
    assert {n.name: net.pid(n) for n in net.layout.nodes} == pids, "a second up restarted a running node"


def test_status_lists_every_process_and_channel_height(net: Network) -> None:
    out = _cli("status", "--dir", str(net.layout.root))
    assert out.returncode == 0, out.stdout + out.stderr
    for node in net.layout.nodes:
        assert node.name in out.stdout and str(net.pid(node)) in out.stdout
    assert "ordering: bft, 4 consenters, tolerates 1 faulty" in out.stderr
    consenters = {  # the consenter table comes after the process table: its rows win
        line.split()[0]: line.split()[1:] for line in out.stdout.splitlines() if line.startswith("orderer")
    }
    orgs = [row[0] for _, row in sorted(consenters.items())]
    assert orgs == ["HospitalsOrderingMSP", "InsurersOrderingMSP", "RegulatorMSP", "PatientsTrustMSP"], consenters
    leads = " ".join(" ".join(row[1:]) for row in consenters.values())
    assert all(leads.count(ch) == 1 for ch in CHANNELS), leads  # each channel has exactly one leader
    st = net.status()
    assert st.healthy
    for peer, heights in st.heights.items():
        assert set(heights) == set(CHANNELS), peer
        assert all(isinstance(h, int) and h >= 4 for h in heights.values()), heights  # genesis + lifecycle txs

    net.stop("chaincode")
    down = _cli("status", "--dir", str(net.layout.root))
    assert down.returncode == 1
    assert "DOWN" in down.stdout and "not running" in down.stdout


def test_env_drives_fabrics_own_peer_cli(net: Network, tmp_path: Path) -> None:
    out = _cli("env", "--dir", str(net.layout.root), "--org", "Insurers")
    assert out.returncode == 0, out.stderr
    script = tmp_path / "q.sh"
    script.write_text(
        out.stdout + "\npeer channel list\n"
        'peer chaincode query -C insurance -n anchor -c \'{"Args":["GetAnchorByRoot","' + "0" * 64 + "\"]}'\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORE_", "FABRIC_"))}
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert all(ch in res.stdout for ch in CHANNELS), res.stdout + res.stderr
    assert "is not anchored" in res.stderr  # the query reached our chaincode as the Insurers admin
    exports = dict(shlex.split(line)[1].split("=", 1) for line in out.stdout.splitlines())
    assert exports["CORE_PEER_LOCALMSPID"] == "InsurersMSP"
    assert exports["PATH"].split(":")[0].endswith("/bin")


def test_env_rejects_an_unknown_org(net: Network) -> None:
    with pytest.raises(NetworkError, match="unknown org"):
        net.env("Pharmacies")


def test_a_port_clash_is_named(net: Network, tmp_path: Path) -> None:
    other = Network(tmp_path / "clash", net.layout.base_port)
    with pytest.raises(NetworkError, match=f"port {net.layout.base_port} is already in use"):
        other.up()
    assert other.down() == []


def test_down_stops_by_pid_and_up_restarts_with_the_same_ledgers(net: Network) -> None:
    before = net.status().heights
    stopped = net.down()
    assert sorted(stopped) == sorted(n.name for n in net.layout.nodes)
    assert all(net.pid(n) is None for n in net.layout.nodes)
    assert net.layout.root.exists(), "down without --wipe keeps the directory"
    net.up()
    after = net.status()
    assert after.healthy
    for peer, heights in before.items():
        for ch, h in heights.items():
            assert isinstance(h, int)
            got = after.heights[peer][ch]
            assert isinstance(got, int) and got >= h, (peer, ch, h, got)
    state = json.loads((net.layout.root / "network.json").read_text())
    assert state["base_port"] == net.layout.base_port


def test_fabrics_programs_are_built_once_and_cached(net: Network) -> None:
    from receipt_service.fabric.network import CACHE, INSTALL_SCRIPT

    out = subprocess.run(
        ["bash", str(INSTALL_SCRIPT), str(CACHE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert net.home is not None and out.stdout.strip() == str(net.home)
    assert "building" not in out.stderr and "checking" not in out.stderr, "a second run must not rebuild"
    assert (net.home / "VERSION").read_text().startswith("3.1.5 src-")
    version = subprocess.run([str(net.home / "bin" / "peer"), "version"], capture_output=True, text=True, check=True)
    assert "Version: 3.1.5" in version.stdout


def test_a_bad_base_port_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match="ephemeral range"):
        Network(tmp_path / "n", 40000)


def test_the_chaincode_server_demands_mutual_tls(net: Network) -> None:
    import socket
    import ssl

    assert "(TLS true)" in net.log_tail(net.layout.chaincode, 5)
    ctx = ssl.create_default_context(cafile=str(net.layout.tls_ca("Hospitals")))
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", net.layout.chaincode.port), timeout=5) as raw,
        pytest.raises(ssl.SSLError, match=r"CERTIFICATE_REQUIRED|certificate required"),
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        tls.recv(16)
