"""Realistic users of the receipt service, for locust.

    RECEIPT_API_KEY=hrk_... locust -f loadtest/locustfile.py --host http://127.0.0.1:8080
    python loadtest/run_locust.py        # starts a service, runs headless, writes CSV + HTML to loadtest/out/
    python loadtest/run_locust.py --instances 3    # three instances on one Redis, users spread over them

RECEIPT_HOSTS=url1,url2,... spreads the users over several instances (each user keeps one); receipts
submitted through one instance are fetched through others.

Users:
- WearableSync: a phone app syncing a wearable, posting batches of 50-500 reading hashes.
- ClinicSystem: a clinic's record system posting one hash per saved note, now and then fetching it.
- Auditor: an insurer's auditor fetching receipts in batches (and a Chainpoint export, and the ledger key).
"""

from __future__ import annotations

import os
import random
from collections import deque

from locust import HttpUser, between, task

KEY = os.environ.get("RECEIPT_API_KEY", "")
HEADERS = {"Authorization": f"Bearer {KEY}"}

HOSTS = [h for h in os.environ.get("RECEIPT_HOSTS", "").split(",") if h]
_next_host = 0

# proof ids seen by any user of this locust process (auditors read from it)
SEEN: deque[str] = deque(maxlen=50_000)


def _hashes(n: int) -> list[str]:
    return [os.urandom(32).hex() for _ in range(n)]


def _submit(user: HttpUser, n: int, name: str) -> None:
    """POST n fresh hashes; remember their proof ids for the auditors."""
    with user.client.post(
        "/hashes", json={"hashes": _hashes(n)}, headers=HEADERS, name=name, catch_response=True
    ) as resp:
        if resp.status_code == 202:
            SEEN.extend(item["proof_id"] for item in resp.json()["hashes"])
            resp.success()
        else:
            resp.failure(f"{resp.status_code}: {resp.text[:200]}")


class SpreadUser(HttpUser):
    """A user that keeps one of RECEIPT_HOSTS (round robin), or the --host."""

    abstract = True

    def on_start(self) -> None:
        global _next_host
        if HOSTS:
            self.client.base_url = HOSTS[_next_host % len(HOSTS)]
            _next_host += 1


class WearableSync(SpreadUser):
    """Posts a batch of readings every few seconds."""

    weight = 3
    wait_time = between(1, 5)

    @task
    def sync(self) -> None:
        _submit(self, random.randint(50, 500), "POST /hashes (batch)")


class ClinicSystem(SpreadUser):
    """One hash per saved record; sometimes waits for the receipt."""

    weight = 5
    wait_time = between(0.2, 1)

    @task(5)
    def save_note(self) -> None:
        _submit(self, 1, "POST /hashes (single)")

    @task(1)
    def fetch_receipt(self) -> None:
        if SEEN:
            self.client.get(
                f"/proofs/{random.choice(SEEN)}",
                params={"wait": "anchored", "timeout": "5"},
                headers=HEADERS,
                name="GET /proofs/{id}?wait=anchored",
            )


class Auditor(SpreadUser):
    """Checks receipts in bulk."""

    weight = 1
    wait_time = between(1, 3)

    @task(5)
    def fetch_batch(self) -> None:
        if len(SEEN) >= 10:
            ids = random.sample(list(SEEN)[-5000:], min(250, len(SEEN)))
            self.client.get("/proofs", params={"ids": ",".join(ids)}, headers=HEADERS, name="GET /proofs?ids=(batch)")

    @task(1)
    def chainpoint(self) -> None:
        if SEEN:
            with self.client.get(
                f"/proofs/{random.choice(SEEN)}",
                params={"format": "chainpoint-v4"},
                headers=HEADERS,
                name="GET /proofs/{id} chainpoint",
                catch_response=True,
            ) as resp:
                if resp.status_code in (200, 409):  # 409: not anchored yet, a correct answer
                    resp.success()
                else:
                    resp.failure(f"{resp.status_code}: {resp.text[:200]}")

    @task(1)
    def ledger_key(self) -> None:
        self.client.get("/ledger/key", name="GET /ledger/key")
