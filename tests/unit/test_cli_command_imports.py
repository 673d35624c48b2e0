"""The modules of ``anon deidentify`` and ``anon import`` stay light to import: ``anon
--help`` builds every command's parser, and the work is imported only when a command runs."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("shared.batch.deidentify", "shared.batch.importing", "shared.dimse", "shared.deid.engine",
         "shared.index", "services.cli.progress", "tqdm", "pydicom", "pynetdicom", "asyncpg")


def test_command_modules_import_none_of_the_work() -> None:
    code = ("import json, sys\n"
            "import services.cli.deidentify, services.cli.importing\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    loaded = json.loads(done.stdout)
    assert [m for m in loaded if m.startswith(HEAVY)] == []
