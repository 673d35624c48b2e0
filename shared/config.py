"""Configuration from the environment (12-factor), validated when a program starts.

Every variable is documented in ``.env.example``. A program that finds a value it cannot
use stops at once with a message listing every problem (:func:`load_settings`).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.deid.options import ProfileOptions


class ConfigurationError(Exception):
    """The environment holds values the program cannot use; the message lists them all."""


class Settings(BaseSettings):
    """Settings shared by the command line and the services (see ``.env.example``)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    # The PHI index
    database_url: str | None = Field(
        default=None, description="PostgreSQL URL of the PHI index; unset: embedded server"
    )
    site_id: str | None = Field(
        default=None, description="six-digit SITEID to use at first start (then fixed)"
    )
    data_dir: Path = Field(
        default=Path("data"), description="embedded database, objects, quarantine, reports"
    )
    embedded_database_linger_seconds: float = Field(
        default=300.0, ge=0,
        description="seconds the embedded PostgreSQL keeps running after an anon command, "
        "so the next one finds it started; 0: stop it at once",
    )

    # Broker
    amqp_url: str | None = Field(default=None, description="RabbitMQ URL; unset: in-process")
    queue_prefix: str = Field(
        default="", description="prefix of every queue and exchange name (systems sharing a broker)"
    )
    max_deliveries: int = Field(
        default=5, ge=1, le=100, description="deliveries of a message before it is dead-lettered"
    )
    retry_delay_seconds: float = Field(
        default=5.0, ge=0.001, description="wait after a failed delivery, doubled per failure"
    )
    retry_max_delay_seconds: float = Field(
        default=300.0, ge=0.001, description="longest wait between deliveries"
    )
    shutdown_grace_seconds: float = Field(
        default=30.0, ge=0,
        description="at SIGTERM, seconds the messages being handled get to finish; the rest "
        "go back to their queue",
    )
    incoming_retention_days: float = Field(
        default=0.0, ge=0, description="days a processed received object is kept; 0: none"
    )

    # Object store
    s3_endpoint: str | None = Field(default=None, description="host:port of MinIO/S3")
    s3_access_key: str = Field(default="", description="access key of the object store")
    s3_secret_key: str = Field(default="", description="secret key of the object store")
    s3_secure: bool = Field(default=False, description="true: TLS to the object store")
    bucket_incoming: str = Field(default="incoming", description="received objects, as sent (PHI)")
    bucket_deidentified: str = Field(default="deidentified", description="de-identified objects")
    bucket_quarantine: str = Field(
        default="quarantine", description="refused objects with their reasons (PHI)"
    )
    bucket_exports: str = Field(default="exports", description="reserved for export manifests")

    # Storage SCP
    scp_host: str = Field(default="0.0.0.0", description="address the Storage SCP listens on")
    scp_port: int = Field(default=11112, ge=1, le=65535, description="Storage SCP port")
    scp_ae_title: str = Field(default="ANONSCP", description="Storage SCP AE title")
    scp_allowed_aets: str = Field(default="", description="comma-separated; empty: any")
    scp_allowed_hosts: str = Field(
        default="", description="comma-separated addresses or networks; empty: any"
    )
    scp_spool_dir: Path | None = Field(
        default=None,
        description="the Storage SCP's journal: received objects are durable here before "
        "Success and until relayed; a volume of its own; unset: DATA_DIR/scp-journal",
    )
    scp_processes: int = Field(
        default=1, ge=1, le=64,
        description="receiver processes sharing the SCP port; one per core",
    )
    scp_relay_quiet_seconds: float = Field(
        default=0.25, ge=0,
        description="the relay waits until no object arrived for this long (0: never "
        "waits), so senders are answered at full speed; see SCP_RELAY_MAX_DEFERRED",
    )
    scp_relay_max_deferred: int = Field(
        default=10000, ge=0,
        description="journal entries beyond which the relay no longer waits for a quiet "
        "moment and relays while objects arrive",
    )
    scp_journal_min_free_bytes: int = Field(
        default=256 << 20, ge=0,
        description="free bytes the journal's volume keeps; below it C-STOREs get A700",
    )
    scp_max_associations: int = Field(
        default=32, ge=1, le=1000, description="associations at once; one more is rejected"
    )
    scp_max_pdu_size: int = Field(
        default=16382, ge=0, le=0xFFFFFFFF,
        description="largest P-DATA PDU received, in bytes; 0: no limit",
    )
    scp_acse_timeout: float = Field(
        default=30.0, gt=0, description="seconds for association requests and releases; ARTIM"
    )
    scp_dimse_timeout: float = Field(
        default=30.0, gt=0, description="seconds waiting for an expected DIMSE message"
    )
    scp_network_timeout: float = Field(
        default=60.0, gt=0, description="seconds idle before an association is aborted"
    )
    scp_store_timeout: float = Field(
        default=60.0, gt=0,
        description="seconds to make one C-STORE durable in the journal, then Out of "
        "Resources; at a stop, seconds the relay gets to drain the journal",
    )
    max_object_bytes: int = Field(
        default=4 << 30, ge=1, description="largest object taken in; larger ones refused"
    )

    # Query/retrieve (qr-fetcher): the PACS, and how we call it
    pacs_host: str | None = Field(
        default=None, description="host of the PACS to query; unset: none"
    )
    pacs_port: int = Field(default=104, ge=1, le=65535, description="port of the PACS")
    pacs_ae_title: str = Field(default="PACS", description="called AE title of the PACS")
    qr_ae_title: str = Field(default="ANONQR", description="our calling AE title to the PACS")
    qr_retrieve: str = Field(
        default="move", description="move: C-MOVE to our SCP (SCP_AE_TITLE); get: C-GET"
    )
    qr_timeout_seconds: float = Field(
        default=30.0, gt=0, description="seconds for an association or an answer of the PACS"
    )
    qr_move_timeout_seconds: float = Field(
        default=3600.0, gt=0, description="longest wait for one C-MOVE or C-GET to finish"
    )
    qr_arrival_wait_seconds: float = Field(
        default=60.0, ge=0,
        description="after a retrieve, seconds to wait for instances still on their way",
    )
    qr_retries: int = Field(
        default=2, ge=0, le=20, description="re-requests of what is still missing after a retrieve"
    )
    qr_max_results: int = Field(
        default=1000, ge=1, description="most studies one query returns; more is an error"
    )

    # Export (exporter): the research destination
    export_host: str | None = Field(default=None, description="host of the export destination")
    export_port: int = Field(default=104, ge=1, le=65535, description="port of the destination")
    export_called_ae: str = Field(default="RESEARCH", description="AE title of the destination")
    export_calling_ae: str = Field(default="ANONEXPORT", description="our AE title to it")
    export_enabled: bool = Field(default=True, description="false: export requests are refused")
    export_retries: int = Field(
        default=5, ge=0, le=50, description="retries of a temporary failure, with backoff"
    )
    export_retry_delay_seconds: float = Field(
        default=5.0, ge=0, description="wait before the first retry, doubled per retry"
    )
    export_quiet_seconds: float = Field(
        default=300.0, ge=0,
        description="a study is exported once no object arrived for this long (settled)",
    )
    export_timeout_seconds: float = Field(
        default=30.0, gt=0, description="seconds for an association or an answer of the destination"
    )

    # Commands to the services (anon query, retrieve, export)
    command_timeout_seconds: float = Field(
        default=120.0, gt=0, description="seconds a command waits for the service's answer"
    )

    # Index API (index-api, and anon serve)
    api_host: str = Field(default="0.0.0.0", description="address of the index API")
    api_port: int = Field(
        default=8080, ge=0, le=65535,
        description="port of the index API, the console, /livez, /readyz and /metrics",
    )
    api_phi_reads_per_minute: int = Field(
        default=120, ge=1,
        description="original-value reads one token may make per minute; more are refused",
    )
    api_phi_burst: int = Field(
        default=30, ge=1, description="original-value reads one token may make at once"
    )
    api_max_upload_bytes: int = Field(
        default=16 << 20, ge=1024, description="largest request body (uploads) the API takes"
    )

    # De-identification
    profile_options: str = Field(
        default="retain_longitudinal_modified_dates,retain_patient_characteristics",
        description="comma-separated PS3.15 options of the built-in profile",
    )
    script_path: Path | None = Field(
        default=None, description="CTP anonymizer script instead of the built-in profile"
    )
    script_dialect: str = Field(default="auto", description="script rules: auto, ctp or rsna")
    filter_path: Path | None = Field(
        default=None, description="CTP filter script; objects it refuses are quarantined"
    )
    lookup_table: Path | None = Field(default=None, description="lookup table for @lookup")
    accept_structured_reports: bool = Field(
        default=False, description="de-identify Structured Reports (else refused)"
    )
    accept_secondary_captures: bool = Field(
        default=False, description="de-identify Secondary Captures (else refused)"
    )
    worker_concurrency: int = Field(
        default=4, ge=1, le=64, description="objects in flight per worker process"
    )
    accept_burned_in_annotation: bool = Field(
        default=False,
        description="de-identify objects marked Burned In Annotation YES (else quarantined)",
    )

    # Limits of the reader (MAX_OBJECT_BYTES above applies to every reader too)
    max_inflated_bytes: int = Field(
        default=1 << 30, ge=1024, description="largest inflated size of a deflated data set"
    )
    max_nesting_depth: int = Field(
        default=64, ge=1, le=200, description="deepest nesting of sequences"
    )

    # Operations
    health_host: str = Field(default="0.0.0.0", description="address of the health server")
    health_port: int = Field(
        default=8080, ge=0, le=65535, description="port of /livez, /readyz and /metrics"
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")

    @field_validator("site_id")
    @classmethod
    def _six_digits(cls, value: str | None) -> str | None:
        if value is not None and not (len(value) == 6 and value.isdigit()):
            raise ValueError("SITE_ID must be exactly six digits, e.g. 123456")
        return value

    @field_validator("retry_max_delay_seconds")
    @classmethod
    def _longest_wait(cls, value: float, info: ValidationInfo) -> float:
        if value < info.data.get("retry_delay_seconds", 0):
            raise ValueError("RETRY_MAX_DELAY_SECONDS must not be below RETRY_DELAY_SECONDS")
        return value

    @field_validator("scp_ae_title", "pacs_ae_title", "qr_ae_title", "export_called_ae",
                     "export_calling_ae")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        if not value.strip() or len(value) > 16 or "\\" in value:
            raise ValueError("an AE title has 1 to 16 characters and no backslash")
        return value

    @field_validator("qr_retrieve")
    @classmethod
    def _retrieve(cls, value: str) -> str:
        if value not in ("move", "get"):
            raise ValueError("QR_RETRIEVE is move or get")
        return value

    @field_validator("scp_allowed_hosts")
    @classmethod
    def _hosts(cls, value: str) -> str:
        for entry in _split(value):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (e.g. 10.1.2.3, 10.1.0.0/16)"
                ) from None
        return value

    @field_validator("profile_options")
    @classmethod
    def _options(cls, value: str) -> str:
        names = set(ProfileOptions.names())
        unknown = [v for v in _split(value) if v not in names]
        if unknown:
            raise ValueError(f"unknown options {unknown}; known: {sorted(names)}")
        ProfileOptions(**{v: True for v in _split(value)})
        return value

    @field_validator("script_path", "filter_path", "lookup_table")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("script_dialect")
    @classmethod
    def _dialect(cls, value: str) -> str:
        if value not in ("auto", "ctp", "rsna"):
            raise ValueError("SCRIPT_DIALECT is auto, ctp or rsna")
        return value

    @property
    def allowed_aets(self) -> list[str]:
        return _split(self.scp_allowed_aets)

    @property
    def allowed_hosts(self) -> list[str]:
        return _split(self.scp_allowed_hosts)

    @property
    def options(self) -> ProfileOptions:
        return ProfileOptions(**{name: True for name in _split(self.profile_options)})


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def settings_markdown() -> str:
    """The environment variables of :class:`Settings` as a Markdown table (variable,
    default, meaning), from the fields' defaults and descriptions; docs/operations.md holds
    it between its ``settings-table`` markers."""
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        meaning = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name.upper()}` | {_default_text(field.default)} | {meaning} |")
    return "\n".join(lines) + "\n"


def _default_text(value: object) -> str:
    """A default as it would be written in the environment."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, str) and not value:
        return "empty"
    return f"`{value}`"


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings; raises :class:`ConfigurationError` listing every
    variable that is wrong, by its environment name."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        ]
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from None


def require(settings: Settings, *names: str) -> None:
    """Stop with one message naming every required variable that is unset."""
    missing = [n.upper() for n in names if not getattr(settings, n)]
    if missing:
        raise ConfigurationError(f"missing configuration: {', '.join(missing)} must be set")
