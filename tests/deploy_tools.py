"""The command-line tools of the deployment checks (kubectl, docker-compose, promtool).

On a developer's machine a missing tool skips the test that needs it, saying which; on CI
(``CI`` set, as .ci/run's machines do) it fails it: there every tool is installed
(kubectl is on the CI machines, the others are Debian packages of the Makefile's
TEST_PACKAGES), and a check that silently did not run would pass for one that did.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str, how: str) -> str:
    """The path of ``name``; skips (or on CI fails) the calling test without it."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not installed ({how})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; on CI every deployment check must run", pytrace=False)
    pytest.skip(message)
