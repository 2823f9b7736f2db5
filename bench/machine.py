"""What the numbers were measured on: CPU, cores, memory, Python, databases, commit, date."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from app.db import create_engine


@dataclass(frozen=True)
class Machine:
    cpu_model: str
    cores: int
    ram_gib: float
    python: str
    mariadb: str | None
    sqlite: str
    os: str
    measured_at: str
    commit: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def git_commit(repo: Path) -> str:
    """Short commit id, with "+uncommitted changes" when the work tree differs from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}+uncommitted changes" if dirty else commit


async def mariadb_version(server_url: str | None) -> str | None:
    if server_url is None:
        return None
    engine = create_engine(server_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return str((await conn.execute(sa.text("SELECT VERSION()"))).scalar_one())
    finally:
        await engine.dispose()


async def describe_machine(*, repo: Path, mysql_server_url: str | None) -> Machine:
    return Machine(
        cpu_model=cpu_model(),
        cores=os.cpu_count() or 0,
        ram_gib=ram_gib(),
        python=platform.python_version(),
        mariadb=await mariadb_version(mysql_server_url),
        sqlite=sqlite3.sqlite_version,
        os=f"{platform.system()} {platform.release()}",
        measured_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        commit=git_commit(repo),
    )
