"""The pseudonymizer of the rules in force, for services that run for days.

An administrator can replace the anonymizer script or the filter in the index
(:mod:`shared.index.configuration`) while the workers run. A worker checks the version of
the configuration when a message comes, at most every ``CONFIG_REFRESH_SECONDS``, and
when it moved builds a new :class:`~shared.deid.pseudonymizer.Pseudonymizer` from the
documents in force. A message is handled from start to end by the pseudonymizer it
started with, and its instance record names that one's rules: a change never mixes two
rule sets in one object, and no message is lost or handled twice for it (nothing about
the message changes, only which rules the next ones get). Objects de-identified before
keep the name and SHA-256 of the rules that made them.

No object is de-identified before the configuration was read once: a worker started
while the index is down must not use the settings' script when the index names another.
After that, a check that fails (the index is down) keeps the rules in force until the
next one. The settings' own files are read when the service starts, as before, so a bad
``SCRIPT_PATH`` or ``FILTER_PATH`` still stops it at once.
"""

from __future__ import annotations

import asyncio
import logging
import math

from shared.config import Settings
from shared.deid.ctp_filter import ObjectFilter
from shared.deid.engine import Deidentified
from shared.deid.pseudonymizer import Pseudonymizer
from shared.deid.rules import RuleSet
from shared.index import configuration
from shared.index.configuration import INDEX, ActiveDocument
from shared.index.connect import OpenIndex
from shared.index.phi_index import InstanceRecord
from shared.observability.logging import log_fields

log = logging.getLogger(__name__)


def _key(document: ActiveDocument) -> tuple[str, int, str | None]:
    """What identifies the rules a document gives (every settings' choice gives the
    same: the settings do not change while running)."""
    if document.source != INDEX:
        return ("settings", 0, None)
    return (INDEX, document.version, document.sha256)


class LivePseudonymizer:
    """De-identifies with the script and filter in force (see the module documentation);
    used where a :class:`Pseudonymizer` is (``index``, ``site``, :meth:`prepare`)."""

    def __init__(
        self, settings: Settings, index: OpenIndex, refresh_seconds: float | None = None
    ) -> None:
        self.settings = settings
        self.pool = index.pool
        self.index = index.index
        self.site = index.site
        self.refresh_seconds = (configuration.CONFIG_REFRESH_SECONDS if refresh_seconds is None
                                else refresh_seconds)
        self._settings_rules = configuration.rules_of(None, settings, index.site.site_id)
        self._settings_filter = configuration.filter_of(None, settings)
        self._current: Pseudonymizer | None = None
        self._version = -1
        self._checked = -math.inf
        self._keys: tuple[tuple[str, int, str | None], tuple[str, int, str | None]] | None = None
        self._lock = asyncio.Lock()

    @property
    def version(self) -> int:
        """The configuration version the rules in force were built from (-1: none yet)."""
        return self._version

    @property
    def rules(self) -> RuleSet:
        """The rules in force (the settings' until the configuration was read)."""
        return self._current.rules if self._current is not None else self._settings_rules

    async def current(self) -> Pseudonymizer:
        """The pseudonymizer of the rules in force, checked at most every
        ``refresh_seconds``; raises while the configuration was never read and cannot be."""
        loop = asyncio.get_running_loop()
        if self._current is not None and loop.time() - self._checked < self.refresh_seconds:
            return self._current
        async with self._lock:
            if self._current is None or loop.time() - self._checked >= self.refresh_seconds:
                await self._refresh()
        assert self._current is not None
        return self._current

    async def prepare(
        self, data: bytes, accept_burned_in_annotation: bool = False
    ) -> tuple[Deidentified, InstanceRecord]:
        """:meth:`Pseudonymizer.prepare` with the rules in force."""
        pseudonymizer = await self.current()
        return await pseudonymizer.prepare(data, accept_burned_in_annotation)

    async def _refresh(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            version = await configuration.configuration_version(self.pool)
            if version == self._version:
                self._checked = loop.time()
                return
            script = await configuration.active_script(self.pool, self.settings)
            object_filter = await configuration.active_filter(self.pool, self.settings)
        except Exception as exc:
            if self._current is None:
                raise
            self._checked = loop.time()
            log.warning("configuration not checked; the rules in force stay",
                        extra=log_fields(error=type(exc).__name__, version=self._version))
            return
        keys = (_key(script), _key(object_filter))
        if self._current is not None and keys == self._keys:
            self._version, self._checked = version, loop.time()
            return
        try:
            rules = self._rules(script, keys[0])
            checker = self._filter(object_filter, keys[1])
        except Exception as exc:
            log.error("stored configuration cannot be built; the rules in force stay",
                      extra=log_fields(error=type(exc).__name__, version=version))
            if self._current is None:
                raise
            self._checked = loop.time()
            return
        self._current = Pseudonymizer(self.index, self.site, rules, checker)
        self._version, self._keys, self._checked = version, keys, loop.time()
        log.info("rules in force", extra=log_fields(
            version=version, script=rules.name, script_sha256=rules.sha256,
            script_source=script.source, filter_source=object_filter.source,
            filter_version=object_filter.version))

    def _rules(self, script: ActiveDocument, key: tuple[str, int, str | None]) -> RuleSet:
        if script.source != INDEX:
            return self._settings_rules
        if self._current is not None and self._keys is not None and self._keys[0] == key:
            return self._current.rules
        return configuration.rules_of(script, self.settings, self.site.site_id)

    def _filter(
        self, document: ActiveDocument, key: tuple[str, int, str | None]
    ) -> ObjectFilter:
        if document.source != INDEX:
            return self._settings_filter
        if self._current is not None and self._keys is not None and self._keys[1] == key:
            return self._current.object_filter
        return configuration.filter_of(document, self.settings)
