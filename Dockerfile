# One image for the server and the workers. The server never imports torch; workers need the extra.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY hubtune ./hubtune
COPY server ./server
COPY worker ./worker
COPY plugin ./plugin
COPY migrations ./migrations
ARG EXTRAS=worker
RUN pip install --no-cache-dir ".[${EXTRAS}]"
ENV HUBTUNE_DATA_DIR=/data
ENTRYPOINT ["hubtune"]
