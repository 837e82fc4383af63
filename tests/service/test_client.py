"""The Python client and ``receipt-client`` against a real service process; retry logic against a fake."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from receipt_service._client_cli import main
from receipt_service.client import ReceiptClient, ServiceProblem, Unreachable
from receipt_verifier.history import verify_history
from receipt_verifier.ledger import key_id

from .parties import Party
from .procs import create_key, ledger_public_key, server


def _files(tmp_path: Path) -> list[Path]:
    out = []
    for name, data in [("visit.json", b'{"resourceType":"Encounter"}'), ("scan.pdf", b"%PDF-1.4 " + b"x" * 3_000_000)]:
        (tmp_path / name).write_bytes(data)
        out.append(tmp_path / name)
    return out


def test_stamp_wait_verify_and_upgrade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    key_file = tmp_path / "key"
    key_file.write_text(create_key(data) + "\n")
    work = tmp_path / "records"
    work.mkdir()
    files = _files(work)
    with server(data, 0.2) as (_, base):
        common = ["--server", base, "--key-file", str(key_file)]
        assert main(["stamp", *map(str, files), *common, "--wait", "--timeout", "20"]) == 0
        out = capsys.readouterr().out
        assert out.count("anchored") == 2
        receipts = [f.with_name(f.name + ".receipt.json") for f in files]
        docs = [json.loads(r.read_text()) for r in receipts]
        assert [d["state"] for d in docs] == ["anchored", "anchored"]
        assert docs[1]["hash"] == hashlib.sha256(files[1].read_bytes()).hexdigest()

        late = work / "late.txt"
        late.write_bytes(b"lab result pending")
        assert main(["stamp", str(late), *common]) == 0  # no --wait: written as it stands now
        pending = json.loads((work / "late.txt.receipt.json").read_text())
        assert pending["state"] in ("pending", "aggregated")
        assert main(["upgrade", str(work / "late.txt.receipt.json"), *common, "--wait", "--timeout", "20"]) == 0
        assert json.loads((work / "late.txt.receipt.json").read_text())["state"] == "anchored"
        capsys.readouterr()

        async def key() -> dict[str, object]:
            async with ReceiptClient(base, key_file.read_text()) as client:
                return await client.ledger_key()

        (tmp_path / "ledger-key.json").write_text(json.dumps(asyncio.run(key())))
    pin = ["--ledger-key", str(tmp_path / "ledger-key.json")]
    assert main(["verify", *map(str, [*files, late]), *pin]) == 0
    assert capsys.readouterr().out.count("valid") == 3
    files[0].write_bytes(files[0].read_bytes() + b" ")  # the record changed after it was stamped
    assert main(["verify", str(files[0]), *pin]) == 1
    assert "HashMismatchError" in capsys.readouterr().out


def test_client_errors_carry_the_problem_and_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    token = create_key(data)
    with server(data, 0.2) as (_, base):

        async def run() -> None:
            async with ReceiptClient(base, token) as client:
                items = await client.submit([hashlib.sha256(str(i).encode()).hexdigest() for i in range(1500)])
                assert len(items) == 1500 and len({i.proof_id for i in items}) == 1500
                unknown = "00000000-0000-1000-8000-000000000000"
                batch = await client.receipts([i.proof_id for i in items[:300]] + [unknown])
                assert len(batch.receipts) == 300 and batch.not_found == [unknown]
                with pytest.raises(ServiceProblem) as err:
                    await client.submit(["not-a-hash"])
                assert err.value.status == 422 and "hashes[0]" in err.value.problem["detail"]
            async with ReceiptClient(base, "hrk_nope_nope") as bad:
                with pytest.raises(ServiceProblem) as err:
                    await bad.receipt(items[0].proof_id)
                assert err.value.status == 401 and err.value.problem["title"] == "Unauthorized"

        asyncio.run(run())
        assert main(["stamp", str(tmp_path / "missing.txt"), "--server", base, "--key-file", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err


async def test_retries_on_503_then_succeeds_and_gives_up_when_unreachable() -> None:
    calls = []

    async def hashes(request: web.Request) -> web.Response:
        calls.append(request.headers["Authorization"])
        if len(calls) < 3:
            return web.json_response({"title": "Service unavailable", "detail": "draining"}, status=503)
        doc = await request.json()
        items = [{"proof_id": f"p{i}", "hash": h, "hash_received": "t"} for i, h in enumerate(doc["hashes"])]
        return web.json_response({"hashes": items}, status=202)

    app = web.Application()
    app.router.add_post("/hashes", hashes)
    async with TestServer(app) as srv:
        url = str(srv.make_url("/"))
        async with ReceiptClient(url, "hrk_a_b", backoff=0.01) as client:
            items = await client.submit(["ab" * 32])
        assert [i.proof_id for i in items] == ["p0"] and calls == ["Bearer hrk_a_b"] * 3
        async with ReceiptClient(url, "hrk_a_b", backoff=0.01, retries=1) as client:
            calls.clear()  # the next two answers are 503 again: one retry is not enough
            with pytest.raises(ServiceProblem, match="draining"):
                await client.submit(["ab" * 32])
    async with ReceiptClient(url, "k", backoff=0.01, retries=2) as gone:  # the server is closed now
        with pytest.raises(Unreachable):
            await gone.submit(["ab" * 32])


def test_slow_and_vanishing_uploads(tmp_path: Path) -> None:
    """A client that stops sending gets 408 in time; one that hangs up is a 499, never a 500 or a traceback."""
    import socket
    import time
    import urllib.request

    data = tmp_path / "data"
    token = create_key(data)
    with server(data, 0.2, env={"RECEIPT_SERVICE_BODY_TIMEOUT_SECONDS": "1"}) as (_, base):
        host, port = base.removeprefix("http://").split(":")
        head = (
            f"POST /hashes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 3200\r\n\r\n"
        ).encode()
        with socket.create_connection((host, int(port))) as slow:
            slow.sendall(head + b"x" * 100)
            t0 = time.monotonic()
            answer = slow.recv(4096)
            assert b" 408 " in answer.split(b"\r\n")[0] and b"did not arrive within 1 s" in answer
            assert time.monotonic() - t0 < 5
        with socket.create_connection((host, int(port))) as gone:
            gone.sendall(head + b"x" * 100)
        time.sleep(0.5)
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        assert 'route="/hashes",status="408"} 1.0' in metrics, metrics
        assert 'route="/hashes",status="499"} 1.0' in metrics, metrics
        assert 'status="500"' not in metrics


def test_stamp_for_a_subject_and_domain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    app_token = create_key(data, "owner-app", tenant="wearco")
    (tmp_path / "clinic-key").write_text(create_key(data, "provider", tenant="clinic") + "\n")
    record = tmp_path / "treatment.json"
    record.write_bytes(b'{"drug": "amoxicillin"}')
    subject = "did:example:patient-7f3a91c2"
    with server(data, 0.2) as (_, base):
        assert asyncio.run(_register(base, app_token, subject)) == 201
        common = ["--server", base, "--key-file", str(tmp_path / "clinic-key"), "--subject", subject]
        assert main(["stamp", str(record), *common, "--domain", "medical-history", "--wait", "--timeout", "20"]) == 0
        doc = json.loads((tmp_path / "treatment.json.receipt.json").read_text())
        assert (doc["domain"], doc["subject"], doc["subject_seq"], doc["state"]) == (
            "medical-history",
            subject,
            0,
            "anchored",
        )
        capsys.readouterr()
        assert main(["stamp", str(record), *common, "--domain", "insurance"]) == 2  # refused: nothing written
        assert "Table I" in capsys.readouterr().err


def test_history_is_fetched_for_the_owner_and_refused_without_a_grant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``receipt-client history``: the owner's app fetches the subject's whole log, which verifies offline as
    complete; the insurer, without the owner's grant, is refused with the service's reason."""
    data = tmp_path / "data"
    keys = {
        "app": create_key(data, "owner-app", tenant="wearco"),
        "clinic": create_key(data, "provider", tenant="clinic"),
        "insurer": create_key(data, "insurer", tenant="insure"),
    }
    for who, token in keys.items():
        (tmp_path / who).write_text(token + "\n")
    records = [tmp_path / "visit.json", tmp_path / "lab.json"]
    for i, record in enumerate(records):
        record.write_bytes(b'{"visit": %d}' % i)
    subject = "did:example:patient-hist-01"
    with server(data, 0.2) as (_, base):
        assert asyncio.run(_register(base, keys["app"], subject)) == 201
        net = ["--server", base, "--key-file"]
        stamp = ["stamp", *map(str, records), *net, str(tmp_path / "clinic"), "--subject", subject]
        assert main([*stamp, "--domain", "medical-history", "--wait", "--timeout", "20"]) == 0
        out = tmp_path / "history.json"
        fetch = ["history", subject, "--domain", "medical-history", "-o", str(out), *net]
        capsys.readouterr()
        assert main([*fetch, str(tmp_path / "app")]) == 0
        assert f"wrote {out}: 2 record(s)" in capsys.readouterr().out
        assert main([*fetch, str(tmp_path / "insurer")]) == 2  # no grant from the owner
        assert "403" in capsys.readouterr().err
        assert main([*fetch, str(tmp_path / "app"), "--wait-committed", "5"]) == 2
        assert "--wait-committed needs --trust" in capsys.readouterr().err
        out.unlink()
        trust = str(Path(__file__).parents[2] / "proof_spec" / "vectors" / "fabric" / "trust.json")
        waited = [*fetch, str(tmp_path / "app"), "--wait-committed", "0.5", "--trust", trust, "--poll", "0.1"]
        assert main(waited) == 1  # this lane anchors to the local ledger only: no Fabric anchor ever comes
        err = capsys.readouterr().err
        assert "waiting for the lane's next window" in err and "has no Fabric anchor after 0.5 s" in err
        assert out.exists()  # written all the same
    report, found = verify_history(json.loads(out.read_text()), _pinned(data))
    assert report.complete and [r.hash for r in found] == [hashlib.sha256(r.read_bytes()).digest() for r in records]


async def _register(base: str, app_token: str, subject: str) -> int:
    """The owner's app registers ``subject`` with the owner's key; the answer's status."""
    async with (
        aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {app_token}"}) as http,
        http.post("/signing-keys", json={"jwk": Party().jwk, "subject": subject}) as resp,
    ):
        return resp.status


def _pinned(data: Path) -> dict[str, Any]:
    key = ledger_public_key(data)
    return {key_id(key): key}
