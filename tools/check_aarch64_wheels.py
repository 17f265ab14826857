"""Checks that every runtime dependency has a binary wheel for aarch64 Linux (Raspberry Pi, Jetson).

Runs `pip download --only-binary=:all: --no-deps` for each dependency against manylinux aarch64
platform tags and prints a table: package, version, wheel file, ok. Exit status 1 when any is
missing. llvmlite is checked at the version range numba's wheel pins.

pip matches --platform tags exactly (manylinux_2_28 does not imply manylinux_2_27), so the default
(manylinux2014 / manylinux_2_17 only) is the strictest target; `--glibc 2.31` accepts every tag a
glibc-2.31 board (Ubuntu 20.04, JetPack 5) runs.

    python tools/check_aarch64_wheels.py [--python-version 3.11] [--glibc 2.31] [--platform TAG]
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64")
# Not in pyproject's list but imported at run time through the tflite schema package.
EXTRA = ("flatbuffers",)
# llvmlite is checked right after numba, at the version numba's wheel requires.


@dataclass(frozen=True)
class WheelCheck:
    package: str
    version: str
    wheel: str
    ok: bool
    detail: str = ""


def glibc_platforms(glibc: str) -> tuple[str, ...]:
    """All manylinux_2_N_aarch64 tags a system with this glibc runs; pip --platform does not expand them itself."""
    major, minor = (int(p) for p in glibc.split("."))
    if major != 2 or minor < 17:
        raise SystemExit(f"--glibc must be 2.17 or newer, got {glibc}")
    return tuple(f"manylinux_2_{n}_aarch64" for n in range(17, minor + 1) if f"manylinux_2_{n}_aarch64" not in PLATFORMS)


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]


def runtime_dependencies(pyproject: Path) -> list[str]:
    """Requirement strings from [project].dependencies, plus EXTRA if not already there."""
    deps = list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])
    names = {_name(d).lower() for d in deps}
    deps += [e for e in EXTRA if e not in names]
    return deps


def llvmlite_requirement(dest: Path) -> str:
    """numba's own llvmlite pin, read from the numba wheel just downloaded (plain "llvmlite" if none)."""
    for wheel in dest.glob("numba-*.whl"):
        with zipfile.ZipFile(wheel) as z:
            meta = next((n for n in z.namelist() if n.endswith(".dist-info/METADATA")), None)
            if meta is None:
                continue
            for line in z.read(meta).decode("utf-8", "replace").splitlines():
                m = re.match(r"Requires-Dist:\s*(llvmlite\s*[^;]*)", line)
                if m:
                    return m.group(1).replace(" ", "").replace("(", "").replace(")", "")
    return "llvmlite"


def check(requirement: str, python_version: str, dest: Path, platforms: tuple[str, ...] = PLATFORMS) -> WheelCheck:
    name = _name(requirement)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--python-version", python_version, "-d", str(dest), "--quiet"]
    for p in platforms:
        cmd += ["--platform", p]
    cmd.append(requirement)
    before = set(dest.iterdir())
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    new = sorted(set(dest.iterdir()) - before)
    norm = name.lower().replace("-", "_")
    wheels = [p.name for p in new if p.suffix == ".whl"] or \
             [p.name for p in dest.glob("*.whl") if p.name.lower().startswith(norm + "-")]
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
        return WheelCheck(name, "-", "-", False, last)
    wheel = wheels[0]
    version = wheel.split("-")[1]
    return WheelCheck(name, version, wheel, True)


def format_table(rows: list[WheelCheck]) -> str:
    header = ("package", "version", "wheel file", "ok")
    cells = [header] + [(r.package, r.version, r.wheel, "yes" if r.ok else f"NO ({r.detail})") for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(4)).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python-version", default="3.11")
    parser.add_argument("--pyproject", type=Path, default=Path(__file__).resolve().parents[1] / "pyproject.toml")
    parser.add_argument("--platform", action="append", default=[],
                        help="extra platform tag to accept, e.g. manylinux_2_28_aarch64 (repeatable)")
    parser.add_argument("--glibc", help="accept every manylinux tag up to this glibc, e.g. 2.31 (Ubuntu 20.04), "
                                        "2.36 (Raspberry Pi OS bookworm)")
    args = parser.parse_args(argv)
    platforms = PLATFORMS + tuple(args.platform) + (glibc_platforms(args.glibc) if args.glibc else ())
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgert-wheels-") as tmp:
        dest = Path(tmp)
        for dep in runtime_dependencies(args.pyproject):
            rows.append(check(dep, args.python_version, dest, platforms))
            if _name(dep).lower() == "numba":
                # numba pins its compiler backend; check the llvmlite it actually needs.
                rows.append(check(llvmlite_requirement(dest), args.python_version, dest, platforms))
                if not rows[-2].ok:  # without numba's wheel its llvmlite pin is unknown
                    rows[-1] = dataclasses.replace(rows[-1], package="llvmlite (unpinned)")
    print(f"aarch64 wheels for Python {args.python_version} ({', '.join(platforms)}):")
    print(format_table(rows))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
