"""What every adapter's client does with the HTTP client and the request budget of its account."""

from __future__ import annotations

from types import TracebackType
from typing import Self

import httpx

from app.services.marketplace.budget import BudgetSnapshot, Clock, RequestBudget, Sleep


class AccountConnection:
    """One account's HTTP client (built here unless handed in) and its request budget."""

    # A little over 10 s, so that network jitter between our send times and the server's arrival
    # times cannot squeeze one request too many into the server's 10 s window.
    window_seconds: float = 10.2

    def __init__(
        self,
        *,
        marketplace_id: int,
        http: httpx.AsyncClient | None,
        base_url: str,
        read_timeout_seconds: float,
        connect_timeout_seconds: float,
        max_connections: int,
        requests_per_window: int,
        clock: Clock,
        sleep: Sleep,
    ) -> None:
        self._owns_http = http is None
        if http is None:
            http = httpx.AsyncClient(
                base_url=base_url,
                timeout=httpx.Timeout(read_timeout_seconds, connect=connect_timeout_seconds),
                limits=httpx.Limits(
                    max_connections=max_connections, max_keepalive_connections=max_connections
                ),
            )
        self._http = http
        self._budget = RequestBudget(
            marketplace_id=marketplace_id,
            max_requests=requests_per_window,
            window=self.window_seconds,
            clock=clock,
            sleep=sleep,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this object built it; a client handed in stays open."""
        if self._owns_http:
            await self._http.aclose()

    def budget_snapshot(self) -> BudgetSnapshot:
        """The request budget now: sends in the current window, the reserve, waiters by kind."""
        return self._budget.snapshot()

    def paused_for(self) -> float:
        """Seconds left of the account-wide pause a 429 (or an exhausted window) set; 0 if none."""
        return self._budget.paused_for()
