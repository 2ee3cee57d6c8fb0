"""The wheel: agents/ and tables/ install inside rtdstream, never as top-level packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_maps_agents_and_tables_into_the_rtdstream_namespace(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(ROOT)],
        check=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("rtdstream-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert top_level == {"rtdstream"}
    for module in ("rtdstream/agents/validate.py", "rtdstream/tables/__init__.py", "rtdstream/app.py"):
        assert module in names
    # every Python file of the source tree is in the wheel (a subpackage missing from pyproject would not be)
    sources = {
        str(path.relative_to(ROOT)).replace("agents/", "rtdstream/agents/", 1).replace("tables/", "rtdstream/tables/", 1)
        for folder in ("rtdstream", "agents", "tables")
        for path in (ROOT / folder).rglob("*.py")
    }
    assert sources - set(names) == set()
