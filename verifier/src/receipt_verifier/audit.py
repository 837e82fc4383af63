"""The insurer's batch audit: a folder of records with their receipts, each verified, one report.

Layout: ``NAME.receipt.json`` (a receipt or an evidence bundle) beside the record ``NAME``, or beside
``NAME.sha256`` holding only the record's hash. A record without a receipt and a receipt without a
record are both reported; an audit passes only when every record has a valid receipt.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import Error, UsageError
from .verify import AnchorPolicy, AnchorStatus, Verifier

RECEIPT_SUFFIX = ".receipt.json"
HASH_SUFFIX = ".sha256"


@dataclass(frozen=True)
class AuditItem:
    """One record (or its hash file) and its receipt; either may be missing."""

    name: str
    record: Path | None
    receipt: Path | None


def find_items(root: Path) -> list[AuditItem]:
    """Pair every record under ``root`` with its receipt."""
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory")
    receipts: dict[str, Path] = {}
    records: dict[str, Path] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = str(path.relative_to(root))
        if rel.endswith(RECEIPT_SUFFIX):
            receipts[rel[: -len(RECEIPT_SUFFIX)]] = path
        else:
            records[rel.removesuffix(HASH_SUFFIX)] = path
    names = sorted(set(receipts) | set(records))
    return [AuditItem(n, records.get(n), receipts.get(n)) for n in names]


def audit_item(verifier: Verifier, item: AuditItem, policy: AnchorPolicy) -> dict[str, Any]:
    """Verify one item; never raises for a bad receipt (the report says why)."""
    out: dict[str, Any] = {"record": item.name, "valid": False}
    if item.receipt is None:
        return {**out, "record_check": "no receipt", "reason": "the record has no receipt"}
    record = record_hash = None
    if item.record is None:
        out["record_check"] = "no record"
    elif item.record.name.endswith(HASH_SUFFIX):
        words = item.record.read_text().split()
        record_hash = words[0] if words else ""
        out["record_check"] = "hash given"
    else:
        record = item.record.read_bytes()
        out["record_check"] = "record hashed"
    try:
        result = verifier.verify(item.receipt.read_bytes(), record=record, record_hash=record_hash)
    except Error as exc:
        return {**out, "error": type(exc).__name__, "reason": exc.diagnostics()}
    report = result.to_dict(policy)
    if item.record is None:
        report["valid"] = False
        report["reason"] = "the receipt's record is not in the folder"
    return {**out, **report}


def run_audit(
    root: Path, verifier: Verifier, policy: AnchorPolicy, advance: Callable[[], None] | None = None
) -> dict[str, Any]:
    """The whole report: ``{"summary": ..., "items": [...]}``."""
    items = find_items(root)
    if not items:
        raise UsageError(f"{root}: no records or receipts found")
    results = []
    for item in items:
        results.append(audit_item(verifier, item, policy))
        if advance is not None:
            advance()
    channels: Counter[str] = Counter()
    failed_anchors: Counter[str] = Counter()
    for r in results:
        for a in r.get("anchors", []):
            where = a.get("details", {}).get("channel", a["type"])
            if a["status"] == AnchorStatus.VERIFIED.value:
                channels[where] += 1
            else:
                failed_anchors[where] += 1
    valid = sum(r["valid"] for r in results)
    summary = {
        "folder": str(root),
        "audited_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "records": len(results),
        "valid": valid,
        "invalid": len(results) - valid,
        "policy": policy.describe(),
        "verified_anchors": dict(sorted(channels.items())),
        "unverified_anchors": dict(sorted(failed_anchors.items())),
    }
    return {"summary": summary, "items": results}


_CSS = """
td code{word-break:break-all;font-size:12px}
body{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#1d2330}
h1{font-size:1.4rem;margin:0 0 .2rem} .sub{color:#5b6475;margin-bottom:1.2rem}
.cards{display:flex;gap:1rem;margin:1rem 0 1.5rem} .card{border:1px solid #d5dae3;border-radius:8px;padding:.7rem 1rem}
.card b{display:block;font-size:1.5rem} .ok{color:#0a7d38} .bad{color:#b3261e} .nv{color:#8a6d00}
table{border-collapse:collapse;width:100%;table-layout:fixed} th:nth-child(1){width:16%} th:nth-child(2){width:24%} th:nth-child(3){width:20%} th,td{border-bottom:1px solid #e3e7ee;padding:.4rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f5f9;font-weight:600} code{font-size:12px} .anchor{overflow-wrap:anywhere} .reason{color:#5b6475;font-size:12px;overflow-wrap:anywhere}
"""


def _short(when: str) -> str:
    """``2026-11-21T20:22:25.616865Z`` -> ``2026-11-21 20:22:25Z``."""
    return when[:19].replace("T", " ") + "Z" if len(when) >= 19 else when


def render_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page (no script, no external resource)."""
    s = report["summary"]
    e = html.escape
    cards = [
        ("records", s["records"], ""),
        ("valid", s["valid"], "ok"),
        ("invalid", s["invalid"], "bad" if s["invalid"] else "ok"),
    ]
    cards += [(f"verified on {k}", v, "ok") for k, v in s["verified_anchors"].items()]
    rows = []
    for r in report["items"]:
        status = '<b class="ok">valid</b>' if r["valid"] else '<b class="bad">INVALID</b>'
        anchors = []
        for a in r.get("anchors", []):
            d = a.get("details", {})
            cls = {"verified": "ok", "failed": "bad"}.get(a["status"], "nv")
            where = (
                f"Fabric {e(d['channel'])}, block {d['block_number']}"
                + (f", {e(_short(d['tx_time']))}" if "tx_time" in d else "")
                if "channel" in d
                else f"local ledger, entry {d.get('seq', '?')}, {e(_short(str(d.get('time', '?'))))}"
                if a["type"] == "local"
                else e(a["type"])
            )
            anchors.append(
                f'<div class="anchor"><span class="{cls}">{e(a["status"])}</span> {where}</div>'
                + ("" if a["status"] == "verified" else f'<div class="reason">{e(a["reason"])}</div>')
            )
        reason = "" if r["valid"] else f'<div class="reason">{e(str(r.get("reason", "")))}</div>'
        rows.append(
            f"<tr><td>{e(r['record'])}<div class='reason'>{e(r.get('record_check', ''))}</div></td>"
            f"<td>{status}{reason}</td><td><code>{e(r.get('proof_id', '-'))}</code><br>"
            f"<span class='reason'>received {e(_short(str(r.get('hash_received', '-'))))}</span></td>"
            f"<td>{''.join(anchors) or '-'}</td></tr>"
        )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Receipt audit</title>"
        f"<style>{_CSS}</style></head><body><h1>Receipt audit: {e(s['folder'])}</h1>"
        f"<div class='sub'>Audited {e(s['audited_at'])} offline; policy: {e(s['policy'])}.</div>"
        "<div class='cards'>"
        + "".join(f"<div class='card {c}'><b>{v}</b>{e(k)}</div>" for k, v, c in cards)
        + "</div><table><thead><tr><th>record</th><th>result</th><th>receipt</th><th>anchors</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></body></html>\n"
    )


def render_history_html(report: dict[str, Any]) -> str:
    """A history check as a self-contained HTML page (no script, no external resource)."""
    e = html.escape
    ok = report["complete"]
    cards = [
        ("records", report["records"], ""),
        ("complete" if ok else "NOT complete", "✓" if ok else "✗", "ok" if ok else "bad"),
        ("window", e(str(report["window_id"])), ""),
        ("window ended", e(_short(str(report["window_end"]))), ""),
    ]
    if "files" in report:
        f = report["files"]
        cards.append(
            ("files matched", f"{f['matched']}/{f['records']}", "ok" if f["matched"] == f["records"] else "bad")
        )
    problems = "".join(f"<li class='bad'>{e(p)}</li>" for p in report["problems"]) or "<li class='ok'>none</li>"
    rows = "".join(
        f"<tr><td>{r['seq']}</td><td><code>{e(r['hash'])}</code></td><td><code>{e(r['proof_id'])}</code></td>"
        f"<td>{e(_short(r['received']))}</td><td>{e(r.get('file', '-'))}</td></tr>"
        for r in report["items"]
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>History check</title>"
        f"<style>{_CSS}</style></head><body><h1>History of {e(report['subject'])} in {e(report['domain'])}</h1>"
        f"<div class='sub'>Checked {e(report['checked_at'])} offline against the pinned ledger key;"
        f" anchor {e(str(report['anchor']))}.</div><div class='sub'>Append-only: {e(report['append_only'])}.</div>"
        + (f"<div class='sub'>Commit: {e(report['committed'])}.</div>" if report.get("committed") else "")
        + "<div class='cards'>"
        + "".join(f"<div class='card {c}'><b>{v}</b>{e(k)}</div>" for k, v, c in cards)
        + f"</div><h2>Problems</h2><ul>{problems}</ul>"
        "<table><thead><tr><th>seq</th><th>record hash</th><th>proof id</th><th>received</th><th>file</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></body></html>\n"
    )


_CHAIN_CSS = """
table.chain th:nth-child(n){width:auto} table.chain td{overflow-wrap:anywhere}
table.lanes th:nth-child(1){width:14%} table.lanes th:nth-child(2),table.lanes th:nth-child(3),
table.lanes th:nth-child(4){width:7%} table.lanes th:nth-child(5){width:15%}
table.windows th:nth-child(1){width:5%} table.windows th:nth-child(2){width:30%} table.windows th:nth-child(3){width:15%}
table.windows th:nth-child(4){width:15%} table.left th:nth-child(1){width:13%} table.left th:nth-child(2){width:20%}
table.left th:nth-child(3){width:17%}
"""


def render_chain_html(report: dict[str, Any]) -> str:
    """A chain replay (``receipt-verify chain``) as a self-contained HTML page (no script, no external resource)."""
    e = html.escape
    ok = report["ok"]
    lanes = report["lanes"]
    cards = [
        ("verdict", "✓ ok" if ok else "✗ NOT ok", "ok" if ok else "bad"),
        ("blocks", f"{report['first_block']}..{report['last_block']}", ""),
        ("lanes", len(lanes), ""),
        ("windows", sum(lane["windows_checked"] for lane in lanes), ""),
        ("left out", len(report["left_out"]), "nv" if report["left_out"] else ""),
    ]
    summary = "".join(
        f"<tr><td>{e(lane['lane'])}</td><td>{lane['windows_checked']}/{lane['windows_presented']}</td>"
        f"<td>{lane['first_seq']}</td><td>{'-' if lane['tip'] is None else lane['tip']['seq']}</td>"
        f"<td>{'-' if lane['tip'] is None else e(_short(lane['tip']['window_end']))}</td>"
        f"<td class='{'ok' if lane['ok'] else 'bad'}'>{e(lane['verdict'])}</td></tr>"
        for lane in lanes
    )
    sections = []
    for lane in lanes:
        rows = []
        for w in lane["windows"]:
            cls = {"bad": "bad", "not checked": "nv"}.get(
                w["status"], "ok" if w["status"].startswith("committed") else "nv"
            )
            reason = f"<div class='reason'>{e(w['reason'])}</div>" if w.get("reason") else ""
            heads = str(w["heads_size"])
            if w["status"] not in ("bad", "not checked"):
                heads += f" (+{w['inserted']} new, {w['updated']} grown)"
            rows.append(
                f"<tr><td>{w['seq']}</td><td><code>{e(w['window_id'])}</code><div class='reason'>{e(w['where'])}</div></td>"
                f"<td>{e(_short(w['window_end']))}</td><td>{heads}</td><td class='{cls}'>{e(w['status'])}{reason}</td></tr>"
            )
        sections.append(
            f"<h2>Lane {e(lane['lane'])}</h2><table class='chain windows'><thead><tr><th>seq</th><th>window</th><th>window end</th>"
            f"<th>heads</th><th>status</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    left = "".join(
        f"<tr><td>block {t['block']} tx {t['tx']}</td><td>{e(str(t['lane']))} seq {e(str(t['seq']))}</td>"
        f"<td class='nv'>{e(t['code'])}</td><td>{e(t['note'])}<div class='reason'>{e(t['endorsed'])}</div></td></tr>"
        for t in report["left_out"]
    )
    left_table = (
        "<h2>Transactions left out of the chain</h2><table class='chain left'><thead><tr><th>position</th><th>window</th><th>flag</th>"
        f"<th>why</th></tr></thead><tbody>{left}</tbody></table>"
        if left
        else ""
    )
    problems = "".join(f"<li class='bad'>{e(p)}</li>" for p in report["block_problems"]) or "<li class='ok'>none</li>"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Chain replay</title>"
        f"<style>{_CSS}{_CHAIN_CSS}</style></head><body><h1>Chained windows of {e(report['channel'])}</h1>"
        f"<div class='sub'>Checked {e(report['checked_at'])} offline under config block"
        f" {report['trust']['config_block']} (<code>{e(report['trust']['config_block_hash'])}</code>)."
        " A window is committed when a later window's endorsed read set read it as the tip; a lane's newest"
        " window has no successor yet, so its commit rests on the exporting peer's word.</div><div class='cards'>"
        + "".join(f"<div class='card {c}'><b>{v}</b>{e(k)}</div>" for k, v, c in cards)
        + "</div><table class='chain lanes'><thead><tr><th>lane</th><th>windows</th><th>first seq</th><th>tip seq</th>"
        f"<th>tip window end</th><th>verdict</th></tr></thead><tbody>{summary}</tbody></table>"
        f"<h2>Block problems</h2><ul>{problems}</ul>{left_table}{''.join(sections)}</body></html>\n"
    )
