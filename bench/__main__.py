"""`make bench`: run every benchmark in one go and write docs/BENCHMARKS.md.

Each benchmark module exposes main() -> str (a markdown section) and also writes bench/out/<name>.md. Run a
subset with `python -m bench accuracy http`. Figures from one run are comparable with each other; this machine is
shared and noisy, so compare ratios, not absolute numbers across runs.
"""
from __future__ import annotations

import datetime as dt
import importlib
import os
import platform
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
DOC = ROOT / "docs" / "BENCHMARKS.md"

# Order matters only for reading: accuracy first, then speed of scoring, serving and learning.
BENCHMARKS = ["accuracy", "scorer_speed", "http", "loop"]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores ({cpu}){mem}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main(argv: list[str]) -> int:
    names = argv or BENCHMARKS
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    sections: dict[str, str] = {}
    failed = []
    for name in names:
        print(f"== bench {name}", flush=True)
        started = time.monotonic()
        try:
            result = importlib.import_module(f"bench.{name}").main()
            if not isinstance(result, str):  # a module that only wrote its bench/out file
                result = (OUT / f"{name}.md").read_text()
            if "<!-- bench:" not in result:
                result = stamp(name, name.replace("_", " ").capitalize(), result)
            sections[name] = result
        except Exception:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
            sections[name] = f"## {name}\n\nThis benchmark failed in this run; see the output of `make bench`.\n"
        print(f"== bench {name} done in {time.monotonic() - started:.0f} s", flush=True)
    write_doc(sections)
    return 1 if failed else 0


def write_doc(sections: dict[str, str]) -> None:
    """Replace the sections that ran, keep the others as they were recorded."""
    previous = _read_sections()
    previous.update(sections)
    header = (
        "# Benchmarks\n\n"
        "Produced by `make bench` (`python -m bench`; one benchmark: `python -m bench NAME`). "
        "Each section says when and on what machine it was measured.\n"
    )
    body = "\n".join(previous[name].rstrip() + "\n" for name in BENCHMARKS if name in previous)
    DOC.write_text(header + "\n" + body)


def _read_sections() -> dict[str, str]:
    if not DOC.exists():
        return {}
    found: dict[str, str] = {}
    for name in BENCHMARKS:
        marker = f"<!-- bench:{name} -->"
        text = DOC.read_text()
        if marker in text:
            start = text.index(marker)
            end = text.find("<!-- bench:", start + len(marker))
            found[name] = text[start: end if end != -1 else len(text)]
    return found


def stamp(name: str, title: str, body: str) -> str:
    """A benchmark's markdown section with its marker, command, date and machine."""
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!-- bench:{name} -->\n## {title}\n\n"
            f"Command: `make bench` (or `python -m bench {name}`), {when}, on {machine()}.\n\n{body.rstrip()}\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
