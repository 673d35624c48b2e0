"""``anon profile``: what the built-in profile does to each element."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from services.cli.options import add_profile_arguments, profile_options

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.deid.options import ProfileOptions

NAME = "profile"
HELP = "print what the profile does to each element"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--markdown", action="store_true", help="as a Markdown table")
    add_profile_arguments(parser)


def profile_markdown(options: ProfileOptions) -> str:
    from shared.deid.profile import describe_profile

    lines = ["| Tag | Attribute | Code | Action |", "|---|---|---|---|"]
    lines += [f"| {t} | {n} | {c} | {d} |" for t, n, c, d in describe_profile(options)]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, settings: Settings) -> int:
    from shared.deid.profile import describe_profile

    if args.markdown:
        sys.stdout.write(profile_markdown(profile_options(args)))
    else:
        for tag, name, code, text in describe_profile(profile_options(args)):
            print(f"{tag:<14} {code:<3} {name}: {text}")
    return 0
