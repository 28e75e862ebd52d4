"""The vendored front-end libraries are exactly what static/vendor/manifest.json
says: each file has its recorded sha256 and its version in its name, each
package's licence text is there, the pages load only listed files, and
`scripts/vendor.py --check` (`make vendor-check`) says so offline."""

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "static" / "vendor"
SCRIPT = ROOT / "scripts" / "vendor.py"
MANIFEST = json.loads((VENDOR / "manifest.json").read_text())
PACKAGES = MANIFEST["packages"]
FILES = [(entry, item) for entry in PACKAGES for item in entry["files"]]
LICENSED = [owner for entry in PACKAGES for owner in [entry, *entry.get("bundles", [])]]


def _id(value):
    return value.get("file") or value["package"]


@pytest.mark.parametrize(("entry", "item"), FILES, ids=[_id(item) for _, item in FILES])
def test_each_vendored_file_matches_its_sha256(entry, item):
    data = (VENDOR / item["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == item["sha256"]


@pytest.mark.parametrize(("entry", "item"), FILES, ids=[_id(item) for _, item in FILES])
def test_each_vendored_file_name_carries_its_version(entry, item):
    base = item["source"].rsplit("/", 1)[-1]
    assert item["file"] == f"{item['name']}-{entry['version']}{base[base.index('.') :]}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", entry["version"]), "pin an exact release"


@pytest.mark.parametrize("owner", LICENSED, ids=[owner["package"] for owner in LICENSED])
def test_each_package_has_its_licence_text_and_spdx_id(owner):
    slug = owner["package"].lstrip("@").replace("/", "-")
    text = (VENDOR / "licenses" / f"{slug}-LICENSE").read_text()
    assert "permission" in text.lower()
    assert owner["license_text"] == f"licenses/{slug}-LICENSE"
    assert re.fullmatch(r"[A-Za-z0-9.+-]+", owner["license"]), owner["license"]


def test_static_vendor_holds_only_what_the_manifest_lists():
    present = {path.relative_to(VENDOR).as_posix() for path in VENDOR.rglob("*") if path.is_file()}
    listed = {"manifest.json"}
    listed |= {item["file"] for _, item in FILES}
    listed |= {owner["license_text"] for owner in LICENSED}
    assert present == listed


def test_pages_load_only_listed_vendored_files():
    templates = [*ROOT.glob("templates/**/*.html"), *ROOT.glob("dashboard/**/*.html")]
    loaded = {
        name
        for path in templates
        for name in re.findall(r"""vendor/([^'"\s]+)""", path.read_text())
    }
    assert loaded, "no page loads a vendored file"
    assert loaded <= {item["file"] for _, item in FILES}


def run_check(vendor_dir):
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--dir", str(vendor_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_check_names_a_changed_file_a_missing_licence_and_a_stray_file(tmp_path):
    copy = tmp_path / "vendor"
    shutil.copytree(VENDOR, copy)
    result = run_check(copy)
    assert result.returncode == 0, result.stderr

    entry, item = FILES[0]
    with (copy / item["file"]).open("ab") as vendored:
        vendored.write(b"\n")
    (copy / PACKAGES[-1]["license_text"]).unlink()
    (copy / "old-1.0.0.min.js").write_text("")

    result = run_check(copy)
    assert result.returncode == 1
    assert f"{item['file']} does not match its sha256" in result.stderr
    assert f"licence text {PACKAGES[-1]['license_text']} is missing" in result.stderr
    assert "old-1.0.0.min.js is not listed" in result.stderr
