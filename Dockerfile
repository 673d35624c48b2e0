# One image for every service and the operator CLI; the command selects the service.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MIGRATIONS_DIR=/app/infra/db/migrations

WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY infra/db ./infra/db
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app anon \
    && mkdir -p /data && chown anon /data

USER anon
EXPOSE 11112 8080
# Default: the operator CLI; compose and Kubernetes name the service command.
ENTRYPOINT []
CMD ["anon", "--help"]
