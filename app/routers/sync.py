"""Placeholder until the sync endpoints land."""

from fastapi import APIRouter

router = APIRouter(tags=["sync"])
