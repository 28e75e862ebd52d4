#!/usr/bin/env python3
"""Refresh and check the front-end libraries vendored under static/vendor/.

static/vendor/manifest.json lists every npm package the pages load: the
release range we accept ("range"), the release vendored ("version"), its
licence (SPDX id), and for each file the path inside the npm package
("source"), the vendored name (name-version.ext, so a new release is a new
URL and no browser keeps a stale copy) and its sha256. The licence text of
each package, and of any package bundled inside one of its files
("bundles"), is kept as static/vendor/licenses/<package>-LICENSE.

    scripts/vendor.py            move each package to the newest release its range
                                 allows, copy its files and licence, record the
                                 sha256s, delete files of replaced releases
    scripts/vendor.py --pinned   the same for exactly the versions in the manifest
    scripts/vendor.py --check    offline: every file matches its sha256, every
                                 licence text is there, nothing unlisted lies around

Files are copied byte for byte from the tarball `npm pack` downloads (npm
checks it against the registry's integrity hash), so the recorded sha256
can be reproduced from the registry at any time. Only the standard library
and the `npm` client are needed; there is no build step.
"""

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VENDOR_DIR = Path(__file__).resolve().parent.parent / "static" / "vendor"
MANIFEST = "manifest.json"
LICENSES = "licenses"
LICENSE_NAMES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE", "license", "license.md")


class VendorError(Exception):
    pass


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def vendored_name(name: str, version: str, source: str) -> str:
    """`dist/uPlot.iife.min.js` of uplot 1.6.32 named `uPlot` -> `uPlot-1.6.32.iife.min.js`."""
    base = source.rsplit("/", 1)[-1]
    return f"{name}-{version}{base[base.index('.') :]}"


def license_path(package: str) -> str:
    """`@dagrejs/dagre` -> `licenses/dagrejs-dagre-LICENSE`."""
    return f"{LICENSES}/{package.lstrip('@').replace('/', '-')}-LICENSE"


def load(vendor_dir: Path) -> dict:
    return json.loads((vendor_dir / MANIFEST).read_text())


def save(vendor_dir: Path, manifest: dict) -> None:
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    (vendor_dir / MANIFEST).write_text(text)


def _version_key(version: str):
    # npm lists versions in publish order, not semver order (a 1.x backport
    # published after 2.0 comes last), so sort them; a pre-release sorts
    # before its release.
    release, _, pre = version.partition("-")
    numbers = tuple(int(part) for part in release.split(".") if part.isdigit())
    return numbers, pre == "", pre


def _npm(*args: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(["npm", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise VendorError("npm is not installed; it is needed to fetch packages") from None
    if done.returncode != 0:
        raise VendorError(f"npm {' '.join(args)} failed:\n{done.stderr.strip()}")
    return done.stdout


def newest(package: str, range_: str) -> str:
    out = json.loads(_npm("view", f"{package}@{range_}", "version", "--json") or "null")
    versions = [out] if isinstance(out, str) else out or []
    if not versions:
        raise VendorError(f"no release of {package} matches {range_!r}")
    return max(versions, key=_version_key)


class Tarball:
    """One npm package at one version, fetched with `npm pack`."""

    def __init__(self, package: str, version: str, workdir: Path):
        out = json.loads(
            _npm(
                "pack",
                f"{package}@{version}",
                "--json",
                "--pack-destination",
                str(workdir),
                cwd=workdir,
            )
        )
        self.tar = tarfile.open(workdir / out[0]["filename"])
        self.spec = f"{package}@{version}"
        self.package_json = json.loads(self.read("package.json"))

    def read(self, path: str) -> bytes:
        try:
            member = self.tar.getmember(f"package/{path}")
        except KeyError:
            raise VendorError(f"{self.spec} has no file {path}") from None
        if not member.isfile():
            raise VendorError(f"{self.spec}: {path} is not a regular file")
        return self.tar.extractfile(member).read()

    def license_text(self) -> bytes:
        names = {member.name for member in self.tar.getmembers()}
        for name in LICENSE_NAMES:
            if f"package/{name}" in names:
                return self.read(name)
        raise VendorError(f"{self.spec} ships no licence file ({', '.join(LICENSE_NAMES)})")

    def close(self) -> None:
        self.tar.close()


def _check_license(entry: dict, tarball: Tarball) -> None:
    # A package that changes its licence needs a person to look at it, not
    # a silent update of the manifest.
    declared = tarball.package_json.get("license")
    if declared and declared != entry["license"]:
        raise VendorError(
            f"{tarball.spec} declares licence {declared!r}, the manifest says {entry['license']!r}; "
            "review the new licence and update the manifest"
        )


def refresh(vendor_dir: Path, upgrade: bool) -> list[str]:
    """Fetch every package, then write files, licences and the manifest; return what changed."""
    manifest = load(vendor_dir)
    writes: dict[str, bytes] = {}
    changes = []
    with tempfile.TemporaryDirectory(prefix="vendor-") as tmp:
        # Everything is fetched before anything is written, so a failed
        # download leaves static/vendor as it was.
        for entry in manifest["packages"]:
            old = entry["version"]
            if upgrade:
                entry["version"] = newest(entry["package"], entry["range"])
            if entry["version"] != old:
                changes.append(f"{entry['package']} {old} -> {entry['version']}")
                if entry.get("bundles"):
                    changes.append(
                        f"  check the versions bundled in {entry['package']} {entry['version']}"
                    )
            tarball = Tarball(entry["package"], entry["version"], Path(tmp))
            _check_license(entry, tarball)
            entry["license_text"] = license_path(entry["package"])
            writes[entry["license_text"]] = tarball.license_text()
            for item in entry["files"]:
                data = tarball.read(item["source"])
                item["file"] = vendored_name(item["name"], entry["version"], item["source"])
                item["sha256"] = sha256(data)
                writes[item["file"]] = data
            tarball.close()
            for bundled in entry.get("bundles", []):
                inner = Tarball(bundled["package"], bundled["version"], Path(tmp))
                _check_license(bundled, inner)
                bundled["license_text"] = license_path(bundled["package"])
                writes[bundled["license_text"]] = inner.license_text()
                inner.close()

    (vendor_dir / LICENSES).mkdir(exist_ok=True)
    for relative, data in writes.items():
        target = vendor_dir / relative
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)
            changes.append(f"wrote {relative}")
    save(vendor_dir, manifest)
    for stale in sorted(unlisted(vendor_dir, manifest)):
        (vendor_dir / stale).unlink()
        changes.append(f"removed {stale}")
    return changes


def listed(manifest: dict) -> set[str]:
    names = {MANIFEST}
    for entry in manifest["packages"]:
        names.add(license_path(entry["package"]))
        names.update(item["file"] for item in entry["files"])
        names.update(license_path(bundled["package"]) for bundled in entry.get("bundles", []))
    return names


def unlisted(vendor_dir: Path, manifest: dict) -> set[str]:
    present = {
        path.relative_to(vendor_dir).as_posix() for path in vendor_dir.rglob("*") if path.is_file()
    }
    return present - listed(manifest)


def check(vendor_dir: Path) -> list[str]:
    """Problems with the vendored files, without touching the network; empty when all is well."""
    manifest = load(vendor_dir)
    problems = []
    for entry in manifest["packages"]:
        for key in ("package", "range", "version", "license", "files"):
            if not entry.get(key):
                problems.append(f"{entry.get('package', '?')}: manifest entry has no {key!r}")
        spec = f"{entry.get('package')}@{entry.get('version')}"
        for item in entry.get("files", []):
            expected = vendored_name(item["name"], entry["version"], item["source"])
            if item["file"] != expected:
                problems.append(f"{spec}: {item['file']} should be named {expected}")
            path = vendor_dir / item["file"]
            if not path.is_file():
                problems.append(f"{spec}: {item['file']} is missing")
            elif sha256(path.read_bytes()) != item["sha256"]:
                problems.append(
                    f"{spec}: {item['file']} does not match its sha256 {item['sha256']}"
                )
        for owner in [entry, *entry.get("bundles", [])]:
            text = vendor_dir / license_path(owner["package"])
            if not text.is_file() or not text.read_text().strip():
                problems.append(f"{spec}: licence text {license_path(owner['package'])} is missing")
    for stale in sorted(unlisted(vendor_dir, manifest)):
        problems.append(f"{stale} is not listed in {MANIFEST}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="verify sha256s and licences offline")
    mode.add_argument("--pinned", action="store_true", help="fetch exactly the manifest's versions")
    parser.add_argument(
        "--dir", type=Path, default=VENDOR_DIR, help="vendor directory (default: static/vendor)"
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = check(args.dir)
            for problem in problems:
                print(problem, file=sys.stderr)
            if problems:
                return 1
            print(f"{args.dir.name}: every file matches {MANIFEST}")
            return 0
        for line in refresh(args.dir, upgrade=not args.pinned) or ["nothing changed"]:
            print(line)
        return 0
    except VendorError as exc:
        print(f"vendor: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
