"""An installation from a wheel carries what the code reads at run time besides Python."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_every_migration(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps",
         "--quiet", "--wheel-dir", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names
               if "/data/share/dicom-deid-services/migrations/" in n}
    expected = {p.name for p in (ROOT / "infra" / "db" / "migrations").glob("*.sql")}
    assert expected and shipped == expected
    assert any(n.startswith("shared/deid/data/") and n.endswith(".csv") for n in names)
    # The web console, every file of it, where the index API reads it.
    console = {Path(n).name for n in names if n.startswith("services/index_api/console/")}
    assert console == {p.name for p in (ROOT / "services" / "index_api" / "console").iterdir()}
    assert {"index.html", "app.js", "console.css"} <= console
