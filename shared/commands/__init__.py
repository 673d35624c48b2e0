"""Commands to the running services (query, retrieve, export) and their answers.

A command is a JSON request ``{"command": NAME, "arguments": {...}}`` to one service
(``qr-fetcher`` or ``exporter``), answered with ``{"ok": true, "result": {...}}`` or
``{"ok": false, "error": {"type": ..., "message": ...}}``. The same handlers serve every
transport: RabbitMQ request/reply in a deployment (:mod:`shared.commands.rabbit`), and a
local HTTP endpoint of ``anon serve`` (:mod:`shared.commands.local`).
:func:`shared.commands.client.command_client` picks the transport from the settings.
"""
