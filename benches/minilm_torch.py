"""What capturing every layer costs on the PyTorch side: all-MiniLM-L6-v2 (HF
transformers BertModel, eager attention, f32, CPU, torch's default thread count).

    python benches/minilm_torch.py [--model DIR] [--runs N] [--batch-runs N] [--threads N]
                                   [--no-torchlens]

Cases: (a) one sentence of 16 tokens, (b) a batch of 32 of them. Methods, each
under ``torch.no_grad()`` on the same model and encoded inputs (tokenizing is
not timed):

- ``plain``: the forward alone;
- ``hooks+clone``: a forward hook on every module (registered and removed
  around the call) that ``.clone()``s each tensor of its output: what any
  hook-based recorder does at the least;
- ``record_hf``: ``candlelight_hf.record_hf`` (hooks, first tensor, attention
  probabilities via ``output_attentions=True``, ``input_ids``; not saved);
- ``torchlens``: ``torchlens.trace(model, input_kwargs=..., capture=
  CaptureOptions(layers_to_save="all"))`` (``log_forward_pass(...,
  layers_to_save="all")`` on torchlens < 2), every op's output saved; skipped
  with the reason when torchlens does not import (``pip install torchlens``).

torchlens wraps torch's functions on its first call and leaves them wrapped
(checked: a plain forward is as fast after as before, 16.3 vs 16.4 ms minimum
on 1 thread). After warm-up, each round runs every method once, starting one
method later each round. Printed per method: median and minimum (ms),
median/median and min/min over ``plain``, and the median of the per-round
ratios (the methods of one round ran next to each other, so a shared
machine's slow spells partly cancel out). ``--threads N`` sets
``torch.set_num_threads`` (default: torch's own choice, one per core; on a
loaded machine OpenMP threads waiting for a busy core make single timings swing
by 10x or more, so compare with ``--threads 1``).
Model folder: ``--model``, else
``$CANDLELIGHT_MINILM``, else what ``scripts/fetch-minilm`` prints.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))

import candlelight_hf  # noqa: E402

#: 16 tokens with [CLS] and [SEP].
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


def model_dir(arg):
    """The MiniLM folder: the argument, $CANDLELIGHT_MINILM or scripts/fetch-minilm."""
    if arg:
        return arg
    if os.environ.get("CANDLELIGHT_MINILM"):
        return os.environ["CANDLELIGHT_MINILM"]
    out = subprocess.run([os.path.join(ROOT, "scripts", "fetch-minilm")], check=True,
                         stdout=subprocess.PIPE, text=True)
    return out.stdout.strip()


def hooks_clone(model, inputs):
    """One forward with a cloning forward hook on every module."""
    import torch

    kept = []

    def clone(value):
        if torch.is_tensor(value):
            kept.append(value.detach().clone())
        elif isinstance(value, dict):
            for v in value.values():
                clone(v)
        elif isinstance(value, (tuple, list)):
            for v in value:
                clone(v)

    handles = [m.register_forward_hook(lambda _m, _a, out: clone(out)) for m in model.modules()]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for h in handles:
            h.remove()
    return kept


def torchlens_method(model):
    """(callable(inputs) running torchlens with every layer saved, version), or
    (None, reason)."""
    try:
        import torchlens as tl
    except Exception as e:  # ImportError, or a broken install
        return None, "torchlens does not import (%s: %s); pip install torchlens" % (type(e).__name__, e)
    version = getattr(tl, "__version__", "?")
    if hasattr(tl, "trace"):
        from torchlens.options import CaptureOptions

        def run(inputs):
            opts = CaptureOptions(layers_to_save="all")
            return tl.trace(model, input_kwargs=dict(inputs), capture=opts)
    else:

        def run(inputs):
            return tl.log_forward_pass(model, [], input_kwargs=dict(inputs), layers_to_save="all")

    return run, version


def timed(fn):
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def bench_case(label, methods, inputs, runs, warmup):
    """Times ``methods`` (name -> callable(inputs)) in rotating rounds; prints the table."""
    names = list(methods)
    for _ in range(warmup):
        for n in names:
            methods[n](inputs)
    times = {n: [] for n in names}
    for r in range(runs):
        for i in range(len(names)):
            n = names[(r + i) % len(names)]
            times[n].append(timed(lambda: methods[n](inputs)))
    base = times["plain"]
    shape = "x".join(map(str, inputs["input_ids"].shape))
    print("\n%s: %s tokens, %d rounds after %d warm-up round(s)" % (label, shape, runs, warmup))
    print("  %-12s %10s %10s %14s %9s %10s" % ("method", "median ms", "min ms", "median/median", "min/min", "per-round"))
    for n in names:
        ts = times[n]
        per_round = statistics.median(t / b for t, b in zip(ts, base))
        print("  %-12s %10.2f %10.2f %13.2fx %8.2fx %9.2fx" % (
            n, statistics.median(ts), min(ts), statistics.median(ts) / statistics.median(base),
            min(ts) / min(base), per_round))
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="MiniLM folder (default $CANDLELIGHT_MINILM or scripts/fetch-minilm)")
    ap.add_argument("--runs", type=int, default=15, help="rounds for one sentence (default 15)")
    ap.add_argument("--batch-runs", type=int, default=7, help="rounds for the batch of 32 (default 7)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up rounds (default 2)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own)")
    ap.add_argument("--no-torchlens", action="store_true", help="leave torchlens out")
    args = ap.parse_args(argv)

    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # torchlens' capture notices, transformers' deprecations
    model, tok = candlelight_hf.load(model_dir(args.model))
    single, _ = candlelight_hf.encode(tok, SENTENCE)
    batch, _ = candlelight_hf.encode(tok, [SENTENCE] * 32)

    def plain(inputs):
        with torch.no_grad():
            return model(**inputs)

    methods = {
        "plain": plain,
        "hooks+clone": lambda inputs: hooks_clone(model, inputs),
        "record_hf": lambda inputs: candlelight_hf.record_hf(model, inputs),
    }
    tl_run, tl_version = (None, "left out (--no-torchlens)") if args.no_torchlens else torchlens_method(model)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print("all-MiniLM-L6-v2, CPU, torch %s (%d threads), transformers %s, torchlens %s; load average %.1f on %d cores"
          % (torch.__version__, torch.get_num_threads(), transformers.__version__,
             tl_version if tl_run else "-", load, os.cpu_count() or 0))
    if tl_run is None:
        print("torchlens skipped: %s" % tl_version)

    if tl_run is not None:
        try:
            trace = tl_run(single)
            n_layers = len(getattr(trace, "layer_labels", []) or [])
            print("torchlens logs %d layers (ops) of the single sentence" % n_layers)
            methods["torchlens"] = tl_run
        except Exception as e:
            print("torchlens skipped: it failed on MiniLM: %s: %s" % (type(e).__name__, e))

    bench_case("(a) one sentence", methods, single, args.runs, args.warmup)
    bench_case("(b) batch of 32", methods, batch, args.batch_runs, 1)
    print("\nload average now %.1f" % (os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")))


if __name__ == "__main__":
    main()
