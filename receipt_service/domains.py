"""The paper's health-data model as data: roles, data-sharing domains and Table I (pure, no I/O).

Liang et al., PIMRC 2017, Table I: who may *update* (add records to) and *query* (read) each kind
of health data. Every access decision of the service is a lookup in ``TABLE_I``; nothing else in
the code names a role or a domain.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Role = Literal["owner-app", "provider", "insurer", "auditor"]
Operation = Literal["update", "query"]
Access = Literal["own", "grant"]  # a query by the owner's app, or by a receiver under the owner's grant

ROLES: tuple[Role, ...] = ("owner-app", "provider", "insurer", "auditor")
DOMAINS = ("personal-health", "medical-history", "insurance")

#: Table I. Each domain: role -> operations. A query by a receiver (provider, insurer) needs the
#: owner's grant ("with the permission from users"); the owner-app reads its own subjects.
TABLE_I: Mapping[str, Mapping[Role, frozenset[Operation]]] = {
    "personal-health": {
        "owner-app": frozenset({"update", "query"}),
        "provider": frozenset({"query"}),
        "insurer": frozenset({"query"}),
    },
    "medical-history": {
        "provider": frozenset({"update", "query"}),
        "owner-app": frozenset({"query"}),
        "insurer": frozenset({"query"}),
    },
    "insurance": {
        "insurer": frozenset({"update", "query"}),
        "owner-app": frozenset({"query"}),
        "provider": frozenset({"query"}),
    },
}

#: The domain a role's submissions go to when they name none.
HOME_DOMAIN: Mapping[Role, str] = {
    "owner-app": "personal-health",
    "provider": "medical-history",
    "insurer": "insurance",
}

#: Roles that read under a grant (the paper's receivers); the owner-app reads as the owner.
RECEIVERS: frozenset[Role] = frozenset({"provider", "insurer"})

ROLE_NAMES = {
    "owner-app": "User (the data owner's app)",
    "provider": "Healthcare Provider",
    "insurer": "Insurance Company",
    "auditor": "Auditor (read-only, not in Table I)",
}

SUBJECT_RE = re.compile(r"^[A-Za-z0-9._:%-]{16,128}$")


@dataclass(frozen=True)
class Decision:
    """The outcome of a Table I lookup: allowed, or refused with the rule that refused it."""

    allowed: bool
    rule: str
    access: Access | None = None


def parse_role(text: str) -> Role:
    """A role name, or ValueError listing the roles."""
    for role in ROLES:
        if text == role:
            return role
    raise ValueError(f"role {text!r} is unknown; use one of {', '.join(ROLES)}")


def check_domain(text: str) -> str:
    """A domain name, or ValueError listing the domains."""
    if text not in DOMAINS:
        raise ValueError(f"domain {text[:64]!r} is unknown; use one of {', '.join(DOMAINS)}")
    return text


def check_subject(text: str) -> str:
    """A pseudonymous subject id, or ValueError saying what one looks like."""
    if not SUBJECT_RE.fullmatch(text):
        raise ValueError(
            "subject must be a pseudonymous id of 16-128 characters of A-Z a-z 0-9 . _ : % - (for example an HMAC"
            " of your patient id, a UUID or a DID), never a name"
        )
    return text


def may(role: Role, operation: Operation, domain: str) -> Decision:
    """Whether ``role`` may ``operation`` in ``domain`` by Table I (queries by receivers need a grant too)."""
    allowed = TABLE_I[domain].get(role, frozenset())
    if operation not in allowed:
        who = [r for r, ops in TABLE_I[domain].items() if operation in ops]
        return Decision(
            False,
            f"Table I: {ROLE_NAMES[role]} may not {operation} {domain}; {operation} there is for "
            + ", ".join(ROLE_NAMES[r] for r in who),
        )
    access: Access = "grant" if operation == "query" and role in RECEIVERS else "own"
    rule = f"Table I: {ROLE_NAMES[role]} may {operation} {domain}"
    return Decision(True, rule + (" with the owner's grant" if access == "grant" else ""), access)


def table_markdown() -> str:
    """Table I as docs/health-model.md prints it."""
    lines = ["| Health data (domain) | Operator (role) | Operation |", "|---|---|---|"]
    for domain, rows in TABLE_I.items():
        for role, ops in rows.items():
            text = ", ".join(op.capitalize() for op in ("update", "query") if op in ops)
            if role in RECEIVERS:
                text = text.replace("Query", "Query with the owner's grant")
            lines.append(f"| {domain} | {ROLE_NAMES[role]} (`{role}`) | {text} |")
    return "\n".join(lines)
