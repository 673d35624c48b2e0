"""Configuration from the environment (12-factor), validated when a program starts."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Settings shared by the command line and the services (see ``.env.example``)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str | None = Field(
        default=None, description="PostgreSQL URL of the PHI index; unset: embedded server"
    )
    site_id: str | None = Field(
        default=None, description="six-digit SITEID to use at first start (then fixed)"
    )
    data_dir: Path = Field(
        default=Path("data"), description="embedded database, quarantine and reports"
    )

    @field_validator("site_id")
    @classmethod
    def _six_digits(cls, value: str | None) -> str | None:
        if value is not None and not (len(value) == 6 and value.isdigit()):
            raise ValueError("SITE_ID must be exactly six digits, e.g. 123456")
        return value
