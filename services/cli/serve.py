"""``anon serve``: the whole system in one process (``services.embedded``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.config import Settings

NAME = "serve"
HELP = "run the whole system in one process (Storage SCP, workers, index API)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="embedded index and objects (./data)")
    parser.add_argument("--port", type=int, help="Storage SCP port (SCP_PORT, 11112)")
    parser.add_argument("--aet", help="Storage SCP AE title (SCP_AE_TITLE, ANONSCP)")
    parser.add_argument("--api-port", type=int,
                        help="port of the index API with /livez, /readyz and /metrics "
                             "(API_PORT, 8080)")
    parser.add_argument("--health-port", type=int,
                        help="port of /livez, /readyz and /metrics (HEALTH_PORT); without "
                             "--api-port the API is served there too")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from services.embedded.app import serve
    from shared.observability.logging import configure_logging
    from shared.runtime import run_loop

    updates = {k: v for k, v in {"data_dir": args.data_dir, "scp_port": args.port,
                                 "scp_ae_title": args.aet,
                                 "health_port": args.health_port,
                                 "api_port": args.api_port if args.api_port is not None
                                 else args.health_port}.items() if v is not None}
    configure_logging("anon-serve", settings.log_level)
    run_loop(serve(settings.model_copy(update=updates)))
    return 0
