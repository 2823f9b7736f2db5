"""The scenarios of issues 6, 10 and 11, by number; each builds its own fresh stack."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bench.harness import BenchContext
from bench.results import ScenarioResult
from bench.scenarios import (
    s1_bulk_vs_per_item,
    s2_seed_vs_ours,
    s3_scale,
    s4_rate_limit,
    s5_add_quantity,
    s6_refresh_overhead,
    s7_fresh_stock,
    s8_read_load,
    s9_refurbed,
)

Scenario = Callable[[BenchContext], Awaitable[ScenarioResult]]

SCENARIOS: dict[int, tuple[str, Scenario]] = {
    1: ("Bulk sync vs the per-item pattern", s1_bulk_vs_per_item.run),
    2: ("The seed application's way vs ours", s2_seed_vs_ours.run),
    3: ("Scale", s3_scale.run),
    4: ("Under the rate limit", s4_rate_limit.run),
    5: ("Add-quantity under contention", s5_add_quantity.run),
    6: ("Refresh overhead", s6_refresh_overhead.run),
    7: ("Fresh stock under the rate limit", s7_fresh_stock.run),
    8: ("Reads under load during a bulk sync", s8_read_load.run),
    9: ("Every Refurbed offer: the adapter vs the back office's way", s9_refurbed.run),
}
