"""The built package: agents/ and tables/ install inside rtdstream, and an installed wheel serves a working dashboard."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from rtdstream.broker import free_port
from tests.support.browser import headless_chromium
from tests.support.processes import ProcessGroup
from tests.support.web import FEED_READY

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


def checkout_copy(destination: Path) -> Path:
    """The files a clone with this tree's changes holds: tracked and new ones, nothing git ignores.

    Building in the working tree itself would not do: setuptools takes files
    from an earlier build's ``build/`` and ``*.egg-info/``, so a file dropped
    from the package data would still ship.
    """
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():  # a tracked file deleted in the working tree is not
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    return destination


def installed_from_a_wheel(tmp_path: Path) -> Path:
    """A fresh virtual environment with rtdstream installed from a wheel built out of its sdist.

    ``python -m build`` builds the sdist first and the wheel from the unpacked
    sdist, so a file the sdist leaves out is missing from the wheel too.
    """
    source, dist, venv = checkout_copy(tmp_path / "source"), tmp_path / "dist", tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)],
                   check=True, timeout=300, stdout=subprocess.DEVNULL)
    (wheel,) = dist.glob("rtdstream-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
                   check=True, timeout=600)
    return venv


def without_npm(venv: Path, tmp_path: Path) -> dict[str, str]:
    """Only the venv's commands on PATH, no rtdstream setting of the caller's but the ones given here."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RTD_") and key != "PORT"}
    env["PATH"] = str(venv / "bin")
    env["PYTHONUNBUFFERED"] = "1"
    env["RTD_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'rtdstream.sqlite3'}"
    assert shutil.which("npm", path=env["PATH"]) is None and shutil.which("node", path=env["PATH"]) is None
    return env


def imported_from(venv: Path, env: dict[str, str], cwd: Path) -> str:
    """Where the venv's Python finds the rtdstream package."""
    return subprocess.run([str(venv / "bin" / "python"), "-c", "import rtdstream; print(rtdstream.__file__)"],
                          env=env, cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.mark.slow
async def test_an_installed_wheel_serves_the_dashboard_with_its_libraries_and_no_npm(tmp_path: Path) -> None:
    venv = installed_from_a_wheel(tmp_path)
    env = without_npm(venv, tmp_path)
    workdir = tmp_path / "elsewhere"  # not the source tree, which could stand in for the package
    workdir.mkdir()
    where = imported_from(venv, env, workdir)
    assert where.startswith(str(venv)), where

    group = ProcessGroup(log_dir=tmp_path / "logs", cwd=workdir)
    broker_port, web_port = free_port(), free_port()
    env["RTD_BROKER"] = f"kafka://127.0.0.1:{broker_port}"
    try:
        rtdstream = str(venv / "bin" / "rtdstream")
        group.start("broker", [rtdstream, "broker", "--port", str(broker_port)], env, module=False)
        web = group.start("web", [rtdstream, "web", "--host", "127.0.0.1", "--port", str(web_port)], env, module=False)
        await web.await_log(r"web view listening on", timeout=90)
        await web.await_log(FEED_READY, timeout=60)

        async with headless_chromium() as browser:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            response = await page.goto(f"http://127.0.0.1:{web_port}/")
            assert response is not None and response.status == 200, await page.content()
            # The Socket.IO client connected to the web view, and uPlot drew its chart.
            await page.wait_for_selector("#status[data-state=live]", timeout=20_000)
            assert await page.evaluate("typeof io === 'function' && typeof uPlot === 'function'")
            assert await page.locator("#chart canvas").count() >= 1
            assert "missing" not in await page.content()
            assert errors == []
        assert "dashboard libraries missing" not in web.log_text()
    except BaseException:
        group.dump_logs()
        raise
    finally:
        group.stop_all()
