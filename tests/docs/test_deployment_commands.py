"""The deployment commands of docs/operations.md that need no cluster, run as written from
the repository's root (they only read it): the overlays render, promtool accepts the rules."""

from __future__ import annotations

import pytest
import yaml

from tests.deploy_tools import require_tool
from tests.docs.commands import ROOT, reader_env, run, shown_commands
from tests.docs.test_commands import DEPLOYMENT, RUN_ELSEWHERE

COMMANDS = sorted(command for command, where in RUN_ELSEWHERE.items() if where == DEPLOYMENT)


def test_every_deployment_command_is_shown() -> None:
    assert set(COMMANDS) <= {s.command for s in shown_commands()}
    assert len(COMMANDS) == 4


@pytest.mark.parametrize("command", COMMANDS)
def test_deployment_command_runs(command: str) -> None:
    tool = command.split()[0]
    require_tool(tool, "kubectl is on the CI machines; promtool is in the Debian package "
                 "prometheus of TEST_PACKAGES")
    done = run(command, ROOT, reader_env())
    if tool == "kubectl":
        kinds = {doc["kind"] for doc in yaml.safe_load_all(done.stdout) if doc}
        assert {"Deployment", "StatefulSet", "NetworkPolicy", "Job"} <= kinds
    else:
        assert "SUCCESS" in done.stdout
