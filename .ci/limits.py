#!/usr/bin/env python3
"""House limits (docs/ARCHITECTURE.md): no source file over 600 lines, no function
over 80 lines unless the line before it says why (a comment containing "long:"),
and no `crate::` import of a higher layer. Prints what breaks them; exit 1 if any."""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_FILE, MAX_FN = 600, 80
# Layers, bottom up (a module may import only its own layer or lower ones).
LAYERS = {
    "error": 0, "staging": 0, "values": 0, "remote": 0, "location": 0,
    "runfile": 1, "stats": 2,
    "record": 2, "nn": 2, "render": 2, "instrument": 2,
    "pages": 3, "gallery": 4, "diff": 4,
    "watch": 6, "serve": 6, "notebook": 6, "models": 6,
}

def module_of(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT / "src").parts
    return rel[0].removesuffix(".rs")

def functions(lines):
    """(name, first line, length) of each fn, by brace matching (strings and
    comments are rare enough in signatures to ignore)."""
    out = []
    fn_re = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")
    i = 0
    while i < len(lines):
        m = fn_re.match(lines[i])
        if not m:
            i += 1
            continue
        depth, started, j = 0, False, i
        while j < len(lines):
            code = re.sub(r'"([^"\\]|\\.)*"', '""', lines[j].split("//")[0])
            depth += code.count("{") - code.count("}")
            if "{" in code:
                started = True
            if started and depth <= 0:
                break
            if not started and code.rstrip().endswith(";"):
                break
            j += 1
        if started:
            out.append((m.group(6), i, j - i + 1))
        i += 1
    return out

def main() -> int:
    bad = []
    for path in sorted((ROOT / "src").rglob("*.rs")):
        lines = path.read_text().splitlines()
        rel = path.relative_to(ROOT)
        if lines and lines[0].startswith("// Instrumented by candlelight"):
            continue  # third-party model code rewritten by `candlelight instrument`
        if len(lines) > MAX_FILE:
            bad.append(f"{rel}: {len(lines)} lines (limit {MAX_FILE})")
        for name, start, n in functions(lines):
            why = start > 0 and "long:" in " ".join(lines[max(0, start - 3):start])
            if n > MAX_FN and not why:
                bad.append(f"{rel}:{start + 1}: fn {name} is {n} lines (limit {MAX_FN})")
        if rel.parts[1] in ("cli", "main.rs"):
            continue
        me = module_of(path)
        for k, line in enumerate(lines):
            for dep in re.findall(r"crate::([a-z_]+)", line):
                if dep in LAYERS and me in LAYERS and LAYERS[dep] > LAYERS[me]:
                    bad.append(f"{rel}:{k + 1}: {me} imports {dep}, a higher layer")
    for b in bad:
        print(b)
    print(f"limits: {len(bad)} problem(s)")
    return 1 if bad else 0

if __name__ == "__main__":
    sys.exit(main())
