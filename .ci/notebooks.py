#!/usr/bin/env python3
"""Execute every notebook under notebooks/ with the evcxr kernel and check the outputs.

usage: notebooks.py [--out DIR] [--timeout SECONDS] [NOTEBOOK...]

Each notebook runs with `jupyter nbconvert --execute --allow-errors` (kernel `rust`)
into DIR (default target/notebooks-out), never over the committed notebooks. Then
each executed notebook is checked: no error output in any cell, and every cell whose
metadata declares `"candlelight": {"expect": ["text/html", "image/png", ...]}` produced
those MIME types (`image/png` counts when it is a PNG output or a data-URI PNG inside
an HTML output). A cell that prints a line starting with `skipped:` (a notebook
that needs something missing here, e.g. the MiniLM model or torch) is excused from
its `expect`, unless CANDLELIGHT_REQUIRE_HF=1 (set by .ci/run when the MiniLM port
check can run), which makes any `skipped:` line a failure. Prints
`notebooks: N passed, N failed`; exits 1 on any failure.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def outputs_mimes(cell):
    mimes = set()
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        for mime, value in data.items():
            mimes.add(mime)
            if mime == "text/html":
                text = "".join(value) if isinstance(value, list) else value
                if "data:image/png;base64," in text:
                    mimes.add("image/png")
        if out.get("output_type") == "stream":
            mimes.add("text/plain")
    return mimes


def check(path):
    nb = json.loads(pathlib.Path(path).read_text())
    problems = []
    require_all = os.environ.get("CANDLELIGHT_REQUIRE_HF") == "1"
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        src = "".join(cell.get("source", []))
        first = src.strip().splitlines()[0] if src.strip() else ""
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                ev = out.get("evalue", "")
                problems.append(f"cell {i} ({first!r}): error: {out.get('ename', '')}: {ev[:400]}")
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = "".join(out.get("text", []))
                if "error" in text.lower() and "panicked" in text.lower():
                    problems.append(f"cell {i} ({first!r}): panic: {text[:400]}")
        skipped = [
            line
            for out in cell.get("outputs", [])
            if out.get("output_type") == "stream" and out.get("name") == "stdout"
            for line in "".join(out.get("text", [])).splitlines()
            if line.startswith("skipped:")
        ]
        if skipped and require_all:
            problems.append(f"cell {i} ({first!r}): {skipped[0][:400]} (CANDLELIGHT_REQUIRE_HF=1)")
        expect = cell.get("metadata", {}).get("candlelight", {}).get("expect", [])
        if skipped:
            expect = []
        have = outputs_mimes(cell)
        for mime in expect:
            if mime not in have:
                problems.append(f"cell {i} ({first!r}): expected {mime}, got {sorted(have)}")
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "target" / "notebooks-out"))
    ap.add_argument("--timeout", type=int, default=1800, help="per-cell timeout (s)")
    ap.add_argument("--check-only", action="store_true", help="only check already executed notebooks in --out")
    ap.add_argument("notebooks", nargs="*")
    a = ap.parse_args()
    nbs = [pathlib.Path(n).resolve() for n in a.notebooks] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    passed = failed = 0
    for nb in nbs:
        t0 = time.time()
        target = out / nb.name
        if not a.check_only:
            cmd = [
                sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                "--allow-errors", f"--ExecutePreprocessor.timeout={a.timeout}",
                "--ExecutePreprocessor.kernel_name=rust",
                "--ExecutePreprocessor.startup_timeout=300",
                f"--output-dir={out}", f"--output={nb.stem}",
                str(nb),
            ]
            # Run from the notebook's own folder so `:dep candlelight = { path = ".." }` resolves.
            r = subprocess.run(cmd, cwd=nb.parent, capture_output=True, text=True)
            if r.returncode != 0:
                print(f"FAIL {nb.name}: nbconvert exited {r.returncode}\n{r.stderr[-3000:]}")
                failed += 1
                continue
        problems = check(target)
        dt = time.time() - t0
        if problems:
            failed += 1
            print(f"FAIL {nb.name} ({dt:.0f}s)")
            for p in problems:
                print(f"  - {p}")
        else:
            passed += 1
            print(f"ok   {nb.name} ({dt:.0f}s)")
    print(f"notebooks: {passed} passed, {failed} failed")
    return 1 if failed or not (passed + failed) else 0


if __name__ == "__main__":
    sys.exit(main())
