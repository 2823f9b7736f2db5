"""Scenario 9, the BEFORE side: how the seller's current back office reads its Refurbed offers.

Written from shared/refurbed/FACTS.md ("How the seller's current back office uses it"), not from
its source, which this repository does not hold. What it does, and this script does the same:

* `OfferService/ListOffers` at 100 offers a page, the next page `starting_after` the last id;
* a 0.5 s sleep between pages;
* it stops after 100 pages without saying so: a catalogue over 10,000 offers is cut short;
* each call is tried 3 times on 408, 425, 429 and 5xx, 250 ms apart; no request budget, and
  the `X-RateLimit-*` headers are not read.

FACTS.md does not say what it does once the third attempt fails; here it stops reading and keeps
what it had (counted as `gave_up`), the kindest reading for it. Used by
`bench/scenarios/s9_refurbed.py`; runnable alone against a running Refurbed simulator:

    python -m simulator --kind refurbed --port 9100 --listings 20000 --requests-per-10s 20 &
    python bench/before/s9_back_office.py --base-url http://127.0.0.1:9100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

LIST_OFFERS = "/refb.merchant.v1.OfferService/ListOffers"
PAGE_SIZE = 100
PAGE_CAP = 100
SLEEP_BETWEEN_PAGES_S = 0.5
ATTEMPTS = 3
RETRY_PAUSE_S = 0.25
RETRIED_STATUSES = frozenset({408, 425, 429})


@dataclass
class BackOfficeRead:
    """What one read of every offer, the back office's way, did."""

    offer_ids: list[str] = field(default_factory=list)
    pages: int = 0
    calls: int = 0
    retries: int = 0
    status_429: int = 0
    gave_up: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        summary = asdict(self)
        summary["offers"] = len(summary.pop("offer_ids"))
        return summary


def retried(status: int) -> bool:
    return status in RETRIED_STATUSES or status >= 500


async def read_all_offers(base_url: str, *, token: str) -> BackOfficeRead:
    """Every offer the back office's loop reads, with its calls, retries and 429s."""
    read = BackOfficeRead()
    started = time.perf_counter()
    headers = {"Authorization": f"Plain {token}"}
    cursor: str | None = None
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30.0) as http:
        for page in range(PAGE_CAP):
            if page:
                await asyncio.sleep(SLEEP_BETWEEN_PAGES_S)
            pagination: dict[str, Any] = {"limit": PAGE_SIZE}
            if cursor is not None:
                pagination["starting_after"] = cursor
            body: dict[str, Any] | None = None
            for attempt in range(1, ATTEMPTS + 1):
                if attempt > 1:
                    read.retries += 1
                    await asyncio.sleep(RETRY_PAUSE_S)
                read.calls += 1
                response = await http.post(LIST_OFFERS, json={"pagination": pagination})
                if response.status_code == 429:
                    read.status_429 += 1
                if response.status_code == 200:
                    body = response.json()
                    break
                if not retried(response.status_code):
                    break
            if body is None:
                read.gave_up = True
                break
            read.pages += 1
            offers = body.get("offers") or []
            read.offer_ids.extend(str(offer["id"]) for offer in offers)
            if not body.get("has_more") or not offers:
                break
            cursor = str(offers[-1]["id"])
    read.seconds = time.perf_counter() - started
    return read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:9100")
    parser.add_argument("--token", default="sim-token")
    args = parser.parse_args()
    read = asyncio.run(read_all_offers(args.base_url, token=args.token))
    print(json.dumps(read.as_dict(), indent=2))


if __name__ == "__main__":
    main()
