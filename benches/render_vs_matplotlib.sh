#!/usr/bin/env bash
# candlelight vs matplotlib: render conv1 ([1, 32, 26, 26]) of a seed-CNN run to a
# PNG file, the matplotlib way (benches/mpl_grid.py: a 6x6 imshow grid) and with
# candlelight (examples/render_bench.rs), and print the ratio of the medians.
# Both read the same run file, both write a PNG file each repetition.
#
#   benches/render_vs_matplotlib.sh [REPEAT]      (default 20)
#
# Python: $CANDLELIGHT_PYTHON if it has numpy + safetensors + matplotlib, else a
# venv in target/bench-venv (created once with pip).
set -euo pipefail
cd "$(dirname "$0")/.."
repeat="${1:-20}"
mpl_script="${MPL_GRID:-benches/mpl_grid.py}"

py="${CANDLELIGHT_PYTHON:-}"
if [ -z "$py" ] || ! "$py" -c "import numpy, safetensors, matplotlib" 2>/dev/null; then
    venv="target/bench-venv"
    if ! "$venv/bin/python" -c "import numpy, safetensors, matplotlib" 2>/dev/null; then
        echo "creating $venv (numpy safetensors matplotlib)" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check numpy safetensors matplotlib
    fi
    py="$venv/bin/python"
fi

cargo build --release --quiet --example seed_cnn --example render_bench
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
run="$(target/release/examples/seed_cnn "$tmp/runs" | sed -n 's/^wrote //p')"
echo "run: $run (layer conv1)"

mpl_out="$("$py" "$mpl_script" "$run" conv1 "$tmp/mpl.png" --repeat "$repeat")"
cl_out="$(target/release/examples/render_bench "$run" conv1 "$tmp/cl.png" --repeat "$repeat")"
echo "matplotlib:  $(echo "$mpl_out" | tr '\n' ' ')"
echo "candlelight: $(echo "$cl_out" | tr '\n' ' ')"
mpl_s="$(echo "$mpl_out" | sed -n 's/^median_s=//p')"
cl_s="$(echo "$cl_out" | sed -n 's/^median_s=//p')"
"$py" -c "
m, c = float('$mpl_s'), float('$cl_s')
print(f'matplotlib {m*1e3:.1f} ms, candlelight {c*1e3:.3f} ms: candlelight is {m/c:.0f}x faster (goal >= 50x)')
"
