"""The orders watcher: sales seen within a minute, between two full syncs.

`poll`: one poll of `GET /ws/orders` (watermark, overlap, listings re-read); `watcher`: its
schedule and state; `status`: the state's table.
"""

from app.services.orders.poll import ORDERS_LOCK, PollOutcome, poll_orders
from app.services.orders.status import (
    LastPoll,
    MarketplaceWatcherStatus,
    OrdersWatchersStatus,
    WatcherStatus,
)
from app.services.orders.watcher import OrdersWatcher

__all__ = [
    "ORDERS_LOCK",
    "LastPoll",
    "MarketplaceWatcherStatus",
    "OrdersWatcher",
    "OrdersWatchersStatus",
    "PollOutcome",
    "WatcherStatus",
    "poll_orders",
]
