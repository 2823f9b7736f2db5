"""The request budget is the marketplaces' own (`app.services.marketplace.budget`); these names
stay importable from here for the Back Market modules."""

from app.services.marketplace.budget import (
    BudgetSnapshot,
    CallKind,
    Clock,
    PausedTooLong,
    RequestBudget,
    Sleep,
    reserved_slots,
)

__all__ = [
    "BudgetSnapshot",
    "CallKind",
    "Clock",
    "PausedTooLong",
    "RequestBudget",
    "Sleep",
    "reserved_slots",
]
