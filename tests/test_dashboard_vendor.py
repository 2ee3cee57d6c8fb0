"""The dashboard's vendored libraries are the ones the npm lock file pins, with their licences."""

from __future__ import annotations

import json
from pathlib import Path

from rtdstream.web import dashboard

DASHBOARD = Path(dashboard.__file__).resolve().parent / "dashboard"
VENDOR = DASHBOARD / "vendor"
#: A line each minified build starts with that names its version.
BANNERS = {"socket.io-client": "Socket.IO v{version}\n", "uplot": "uPlot (v{version})"}


def locked_packages() -> dict[str, dict]:
    lock = json.loads((DASHBOARD / "package-lock.json").read_text())
    return {path.removeprefix("node_modules/"): entry
            for path, entry in lock["packages"].items() if path.startswith("node_modules/")}


def test_the_manifest_names_every_locked_package_at_its_locked_version_and_integrity() -> None:
    manifest = json.loads((VENDOR / "manifest.json").read_text())
    locked = locked_packages()
    assert set(manifest) == set(locked), "run scripts/update-dashboard-vendor after changing the lock file"
    for name, entry in locked.items():
        assert (manifest[name]["version"], manifest[name]["integrity"]) == (entry["version"], entry["integrity"]), name


def test_every_served_file_is_vendored_from_the_locked_version_of_its_package() -> None:
    manifest = json.loads((VENDOR / "manifest.json").read_text())
    vendored = {target: package for package, entry in manifest.items() for target in entry["files"]}
    assert set(vendored) == set(dashboard.VENDOR_FILES)
    assert dashboard.missing_vendor_files() == []
    for target, package in vendored.items():
        if target.endswith(".js"):
            head = (VENDOR / target).read_text()[:200]
            assert BANNERS[package].format(version=manifest[package]["version"]) in head, target


def test_every_locked_package_ships_its_licence() -> None:
    for name in locked_packages():
        licence = VENDOR / "licenses" / f"{name.replace('/', '+')}.txt"
        assert licence.is_file() and "Permission is hereby granted" in licence.read_text(), name
