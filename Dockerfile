# Two images from one file. The API server never imports torch, so its image has only the base
# dependencies; workers need the training stack (the `worker` extra).
#   docker build --target server -t hubtune-server .   # API server (and migrations, keys): no torch
#   docker build --target worker -t hubtune-worker .   # prepare/train/publish workers (the default)
# Both run as the unprivileged user `hubtune` (uid 10001), which owns /data (HUBTUNE_DATA_DIR).
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HUBTUNE_DATA_DIR=/data
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/hubtune hubtune \
    && mkdir -p /data && chown hubtune:hubtune /data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY hubtune ./hubtune
COPY cli ./cli
COPY server ./server
COPY worker ./worker
COPY plugin ./plugin
COPY migrations ./migrations
# A fresh named volume on /data takes this directory's owner, so the user below can write to it.
VOLUME ["/data"]
ENTRYPOINT ["hubtune"]

FROM base AS server
RUN pip install --no-cache-dir . && pip check
USER hubtune
EXPOSE 8000
# /healthz answers 200 when the database does; the port is HUBTUNE_PORT's (the server's default).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HUBTUNE_PORT', '8000'), timeout=4)"]
CMD ["server", "--host", "0.0.0.0"]

FROM base AS worker
RUN pip install --no-cache-dir ".[worker,tracking]"
USER hubtune
CMD ["worker"]
