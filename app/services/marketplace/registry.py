"""The configured marketplaces of a process: marketplace id -> adapter, built once by the wiring."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from app.errors import InvalidRequest
from app.services.marketplace.protocol import Marketplace


class MarketplaceNotConfigured(InvalidRequest):
    """Live work asked of a marketplace this service has no configuration for (422)."""


class MarketplaceRegistry:
    """Every configured marketplace by id. Use cases receive an adapter from `get`, never build
    or look one up by a global id."""

    def __init__(self, adapters: Iterable[Marketplace]) -> None:
        by_id: dict[int, Marketplace] = {}
        for adapter in adapters:
            if adapter.id in by_id:
                raise ValueError(f"marketplace {adapter.id} is configured twice")
            by_id[adapter.id] = adapter
        self._adapters: Mapping[int, Marketplace] = dict(sorted(by_id.items()))

    def get(self, marketplace_id: int) -> Marketplace:
        """The adapter of `marketplace_id`; MarketplaceNotConfigured (422) when there is none."""
        try:
            return self._adapters[marketplace_id]
        except KeyError:
            configured = ", ".join(str(known) for known in self._adapters) or "none"
            raise MarketplaceNotConfigured(
                f"marketplace {marketplace_id} is not configured on this service (configured: "
                f"{configured}); set MARKETPLACE_{marketplace_id}_KIND and its token to reach it"
            ) from None

    def __contains__(self, marketplace_id: object) -> bool:
        return marketplace_id in self._adapters

    def __iter__(self) -> Iterator[Marketplace]:
        return iter(self._adapters.values())

    def __len__(self) -> int:
        return len(self._adapters)

    @property
    def ids(self) -> list[int]:
        return list(self._adapters)

    async def aclose(self) -> None:
        """Close every adapter, each even when another fails to close."""
        errors: list[BaseException] = []
        for adapter in self._adapters.values():
            try:
                await adapter.aclose()
            except Exception as exc:  # pragma: no cover - a close failing is only reported
                errors.append(exc)
        if errors:
            raise errors[0]
