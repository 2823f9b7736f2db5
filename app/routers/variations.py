"""Placeholder until the variations endpoints land."""

from fastapi import APIRouter

router = APIRouter(tags=["variations"])
