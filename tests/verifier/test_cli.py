"""receipt-verify: inputs, output, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from receipt_verifier._cli import main
from tests.conftest import VECTORS

KEY = str(VECTORS / "ledger-key.pem")


def test_one_valid_receipt(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(VECTORS / "valid/leaf0-of-3.json"), "--ledger-key", KEY]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "local:ok" in out


def test_directory_with_invalid_ones_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(VECTORS / "invalid"), "--ledger-key", KEY, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["valid"] == 0
    assert report["summary"]["invalid"] == len(list((VECTORS / "invalid").glob("*.json")))
    assert all(r["reason"] for r in report["results"])


def test_jsonl_batch_and_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [
        json.dumps(json.loads((VECTORS / f"valid/{n}.json").read_text()))
        for n in ("leaf0-of-3", "leaf2-of-3", "single-leaf")
    ]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(lines) + "\n")
    assert main([str(batch), "--ledger-key", KEY, "--json", "--progress"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["summary"] == {
        "receipts": 3,
        "valid": 3,
        "invalid": 0,
        "policy": "every anchor verified",
    }
    assert "3/3" in captured.err  # the progress bar


def test_fabric_needs_evidence_unless_policy_allows(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(VECTORS / "valid/local-and-fabric.json")
    assert main([path, "--ledger-key", KEY]) == 1
    assert main([path, "--ledger-key", KEY, "--require-anchors", "any"]) == 0
    assert "fabric:not_verified" in capsys.readouterr().out


def test_hash_and_record_checks(tmp_path: Path) -> None:
    path = str(VECTORS / "valid/leaf0-of-3.json")
    good = json.loads((VECTORS / "valid/leaf0-of-3.json").read_text())["hash"]
    assert main([path, "--ledger-key", KEY, "--hash", good.upper()]) == 0
    assert main([path, "--ledger-key", KEY, "--hash", "00" * 32]) == 1
    record = tmp_path / "record.json"
    record.write_bytes(b"tampered record")
    assert main([path, "--ledger-key", KEY, "--record", str(record)]) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["/nonexistent/receipt.json"],
        [str(VECTORS / "valid/leaf0-of-3.json"), "--hash", "xyz"],
        [str(VECTORS / "valid/leaf0-of-3.json"), "--ledger-key", "/nonexistent.pem"],
        [str(VECTORS / "valid/leaf0-of-3.json"), "--require-anchors", "most"],
        [str(VECTORS / "valid/leaf0-of-3.json"), "--no-such-flag"],
        [],
    ],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "exit codes" in out and "2  bad usage" in out


def test_ledger_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from receipt_service.ledger import LocalLedger, TreeRoot

    ledger = LocalLedger(tmp_path)
    for i in range(3):
        ledger.append(
            TreeRoot("w1", i, 1, f"{i:064x}", "2025-01-01T00:00:00Z", "2025-01-01T00:00:01Z"), "2025-01-01T00:00:01Z"
        )
    key = tmp_path / "pub.pem"
    key.write_text(ledger.public_key_pem())
    assert main(["ledger", str(ledger.path), "--ledger-key", str(key)]) == 0
    assert "3" in capsys.readouterr().out
    lines = ledger.path.read_text().splitlines()
    ledger.path.write_text("\n".join([lines[0], lines[2]]) + "\n")  # drop an entry
    assert main(["ledger", str(ledger.path), "--ledger-key", str(key)]) == 1
    assert "a gap, a repeat or a reorder" in capsys.readouterr().err


def test_chainpoint_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chainpoint", str(VECTORS / "valid/single-leaf.json")]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(
        (VECTORS / "chainpoint-v4/single-leaf.chp.json").read_text()
    )


def test_console_script_installed() -> None:
    script = Path(sys.executable).parent / "receipt-verify"
    assert script.is_file() or shutil.which("receipt-verify"), "the receipt-verify console script is installed"
    out = subprocess.run(
        [str(script) if script.is_file() else "receipt-verify", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "exit codes" in out


def test_large_batches_stream_in_order_across_processes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import service_receipts

    docs = service_receipts(tmp_path / "ledger", 2600, max_leaves=700)
    docs[1234]["hash_received"] = docs[1234]["hash_received"].replace(":00.", ":01.")  # one tampered receipt
    batch = tmp_path / "big.jsonl"
    batch.write_text("\n".join(json.dumps(d) for d in docs) + "\n\n")
    key = str(tmp_path / "ledger" / "ledger-key.pem")
    pub = tmp_path / "key.pem"
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(Path(key).read_bytes(), password=None)
    pub.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    reports = {}
    for jobs in ("1", "2"):
        assert main([str(batch), "--ledger-key", str(pub), "--json", "--jobs", jobs]) == 1
        reports[jobs] = json.loads(capsys.readouterr().out)
    one, two = reports["1"], reports["2"]
    assert one == two
    assert one["summary"] == {"receipts": 2600, "valid": 2599, "invalid": 1, "policy": "every anchor verified"}
    assert [r["source"] for r in one["results"]] == [f"{batch}:{n}" for n in range(1, 2601)]
    assert one["results"][1234]["error"] == "ProofIdMismatchError"

    assert main([str(batch), "--ledger-key", str(pub)]) == 1
    out = capsys.readouterr().out
    assert f"{batch}:1235" in out and "ProofIdMismatchError" in out
    assert "(2599 valid receipts not listed)" in out


def test_a_fork_across_workers_is_caught_as_in_one_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key holder equivocates (two ledgers, one key, the same seqs): with ``--jobs`` the two entries
    of a seq mostly reach different workers, and the report must still be the one-process report."""
    import functools

    from receipt_verifier._cli import workers
    from tests.conftest import forked_receipts

    first, second, pub = forked_receipts(tmp_path, 1000, 4)  # 250 trees each: seq 0..249 twice
    batch = tmp_path / "forked.jsonl"
    batch.write_text("".join(json.dumps(d) + "\n" for d in first + second + first))
    monkeypatch.setattr(workers, "line_ranges", functools.partial(workers.line_ranges, size=4096))  # two lines a piece
    texts = {}
    for jobs in ("1", "2"):
        assert main([str(batch), "--ledger-key", str(pub), "--json", "--jobs", jobs]) == 1
        texts[jobs] = capsys.readouterr().out
    assert texts["1"] == texts["2"]  # byte for byte: the same verdicts, reasons and key order
    report = json.loads(texts["2"])
    assert report["summary"] == {"receipts": 3000, "valid": 2000, "invalid": 1000, "policy": "every anchor verified"}
    key = first[0]["branches"][0]["ops"][-1]["anchors"][0]["key_id"]
    for n, r in enumerate(report["results"]):
        assert r["valid"] is not (1000 <= n < 2000), n  # the history seen first counts, seen again it passes
        if not r["valid"]:
            [anchor] = r["anchors"]
            assert anchor["status"] == "failed" and r["reason"] == "0 of 1 anchor verified; the policy requires all"
            assert anchor["reason"] == f"ledger fork: key {key} signed two different entries with seq {(n - 1000) // 4}"


def test_a_ledger_copy_shows_a_fork_in_receipts_of_the_other_history_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import functools

    from receipt_verifier._cli import workers
    from tests.conftest import forked_receipts

    _, second, pub = forked_receipts(tmp_path, 1000, 4)
    batch = tmp_path / "other.jsonl"
    batch.write_text("".join(json.dumps(d) + "\n" for d in second + second))
    monkeypatch.setattr(workers, "line_ranges", functools.partial(workers.line_ranges, size=4096))
    copy = str(tmp_path / "a" / "ledger.jsonl")
    assert main([str(batch), "--ledger-key", str(pub), "--json", "--jobs", "2"]) == 0  # consistent on its own
    capsys.readouterr()
    texts = []
    for jobs in ("1", "2"):
        assert main([str(batch), "--ledger-key", str(pub), "--ledger", copy, "--json", "--jobs", jobs]) == 1
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1]
    report = json.loads(texts[0])
    assert report["summary"]["invalid"] == 2000
    assert {r["anchors"][0]["reason"].split(" with seq ")[0] for r in report["results"]} == {
        f"ledger fork: key {second[0]['branches'][0]['ops'][-1]['anchors'][0]['key_id']} signed two different entries"
    }
    assert main([str(batch), "--ledger", copy]) == 2
    assert "--ledger needs --ledger-key" in capsys.readouterr().err
    assert main([str(batch), "--ledger-key", KEY, "--ledger", copy]) == 2
    assert f"{copy}: the ledger is not signed by any pinned ledger key" in capsys.readouterr().err
    forked = str(tmp_path / "b" / "ledger.jsonl")  # two signed copies that disagree prove the fork: invalid
    assert main([str(batch), "--ledger-key", str(pub), "--ledger", copy, "--ledger", forked]) == 1
    err = capsys.readouterr().err
    assert f"invalid: {forked}: ledger fork: key" in err and "signed two different entries with seq 0" in err


@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_a_line_end_is_not_part_of_the_receipt_in_either_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], end: str
) -> None:
    """``--max-bytes`` counts the receipt alone, whether one process reads the lines or the workers do."""
    line = json.dumps(json.loads((VECTORS / "valid/leaf0-of-3.json").read_text()), separators=(",", ":"))
    batch = tmp_path / "batch.jsonl"
    batch.write_text((line + end) * 2000, newline="")
    for limit, code in ((len(line), 0), (len(line) - 1, 1)):
        texts = []
        for jobs in ("1", "2"):
            argv = [str(batch), "--ledger-key", KEY, "--json", "--jobs", jobs, "--max-bytes", str(limit)]
            assert main(argv) == code, (limit, jobs)
            texts.append(capsys.readouterr().out)
        assert texts[0] == texts[1]


def test_a_saved_proofs_answer_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    receipts = [json.loads((VECTORS / f"valid/{n}.json").read_text()) for n in ("leaf0-of-3", "leaf2-of-3")]
    saved = tmp_path / "answer.json"
    saved.write_text(json.dumps({"receipts": receipts, "not_found": [], "not_anchored": []}, indent=1))
    assert main([str(saved), "--ledger-key", KEY, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["source"] for r in report["results"]] == [f"{saved}#receipts[0]", f"{saved}#receipts[1]"]


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    exe = shutil.which("receipt-verify", path=str(Path(sys.executable).parent))
    assert exe
    receipts = [json.dumps(json.loads((VECTORS / "valid/leaf0-of-3.json").read_text()))] * 3000
    (tmp_path / "many.jsonl").write_text("\n".join(receipts) + "\n")
    out = subprocess.run(
        f"set -o pipefail; '{exe}' '{tmp_path / 'many.jsonl'}' --ledger-key '{KEY}' --json --jobs 1 | head -1",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.stdout == '{"results": [\n'
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr
    assert out.returncode == 141  # killed by SIGPIPE, like any Unix filter


def test_a_summary_fed_encoded_reports_keeps_what_one_fed_reports_keeps() -> None:
    from receipt_verifier._cli.receipts import _Summary
    from receipt_verifier.verify import AnchorPolicy

    reports: list[dict[str, object]] = []
    for i in range(130):
        report: dict[str, object] = {"source": f"r:{i}", "valid": i % 7 != 3}
        if i % 11 == 5:
            report["warnings"] = [f"w{i}"]
        reports.append(report)
    plain, encoded = _Summary(AnchorPolicy()), _Summary(AnchorPolicy())
    for r in reports:
        plain.add(r)
        encoded.add_encoded(bool(r["valid"]), "warnings" in r, json.dumps(r))
    for name in ("receipts", "invalid", "first", "invalid_shown", "warned", "warnings"):
        assert getattr(plain, name) == getattr(encoded, name), name
    assert plain.invalid == 19 and plain.warned == 12 and len(plain.first) == _Summary.SHOWN


@pytest.mark.parametrize("size", [1, 7, 64, 1 << 21])
@pytest.mark.parametrize("text", [b"", b"a\n", b"a", b"\n\nab\n\ncd", b"x" * 150 + b"\nyy\n" + b"z" * 90, b"1\n2\n3\n"])
def test_line_ranges_cover_the_file_and_number_its_lines(tmp_path: Path, size: int, text: bytes) -> None:
    from receipt_verifier._cli.workers import line_ranges

    f = tmp_path / "r.jsonl"
    f.write_bytes(text)
    pieces = list(line_ranges(f, size))
    assert b"".join(text[a:b] for a, b, _ in pieces) == text
    assert all(a < b for a, b, _ in pieces) and all(text[b - 1 : b] == b"\n" for _, b, _ in pieces[:-1])
    numbered = [(n, line) for a, b, first in pieces for n, line in enumerate(text[a:b].split(b"\n"), first)]
    expected = list(enumerate(text.split(b"\n"), 1))
    assert [x for x in numbered if x[1]] == [x for x in expected if x[1]]
