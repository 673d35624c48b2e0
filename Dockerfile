# syntax=docker/dockerfile:1
# One image for every service and the operator CLI; the command selects the service
# (scp-ingest, anonymizer-worker, rt-relinker, qr-fetcher, exporter, index-api, anon ...).
#
# Two stages: the first builds the project's wheel and collects the wheels of every
# dependency (all published as binary wheels, so no compiler is needed); the second installs
# them from a bind mount of the first, so neither pip's cache, the wheels nor any build tool
# ends up in a layer of the final image. Build with BuildKit (docker compose build, or
# docker build, which uses it by default).

FROM python:3.11-slim-bookworm AS wheels
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY infra/db ./infra/db
RUN pip wheel --prefer-binary --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MIGRATIONS_DIR=/app/infra/db/migrations \
    DATA_DIR=/data
WORKDIR /app
# The SQL migrations `anon migrate` and every service apply (MIGRATIONS_DIR).
COPY infra/db/migrations ./infra/db/migrations
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels dicom-deid-services \
    && useradd --system --uid 10001 --gid 0 --home-dir /app --no-create-home anon \
    && mkdir -p /data && chown 10001:0 /data && chmod 0770 /data

# Numeric, so that Kubernetes' runAsNonRoot can verify it without a runAsUser.
USER 10001:0
EXPOSE 11112 8080
ENTRYPOINT []
# Default: the operator CLI; compose and Kubernetes name the service command.
CMD ["anon", "--help"]
