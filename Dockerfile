# The stock-sync service: uvicorn on port 8000, SQLite in the /data volume unless DATABASE_URL
# points at MySQL/MariaDB. Migrations run at start-up (RUN_MIGRATIONS_ON_STARTUP=false to skip).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The exact versions of requirements.lock first (a layer kept while the lock is unchanged), then
# the project itself without resolving anything again; the build directory is thrown away.
WORKDIR /build
COPY requirements.lock ./
RUN pip install -r requirements.lock
COPY pyproject.toml README.md ./
COPY app ./app
COPY simulator ./simulator
RUN pip install --no-deps . && rm -rf /build

RUN useradd --system --user-group --create-home --uid 10001 stocksync \
    && mkdir /data \
    && chown stocksync:stocksync /data

ENV DATABASE_URL=sqlite+aiosqlite:////data/stock_sync.db
VOLUME ["/data"]
WORKDIR /home/stocksync
USER stocksync

EXPOSE 8000
# slim has no curl: ask /healthz with the standard library (urlopen raises on errors and non-2xx).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# Through the CLI, so LOG_FORMAT and LOG_LEVEL shape uvicorn's own lines too.
CMD ["stock-sync", "serve", "--host", "0.0.0.0", "--port", "8000"]
