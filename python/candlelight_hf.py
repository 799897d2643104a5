"""Record a HuggingFace transformers model's forward pass into a candlelight run file,
with the layer names candle's recorder gives a candle-transformers port (issue 12).

    python python/candlelight_hf.py MODEL_DIR "a sentence" [-o OUT] [--batch N]
                                    [--model-name NAME] [--list]
    python python/candlelight_hf.py MODEL_DIR --self-check [-o OUT]

MODEL_DIR holds ``config.json``, the weights and ``tokenizer.json`` (what
``scripts/fetch-minilm`` prints). The sentence is tokenized with the fast
tokenizer of ``tokenizer.json`` (special tokens added, no padding, no
truncation; ``--batch N`` repeats it N times), the model
(``AutoModel.from_pretrained(MODEL_DIR, attn_implementation="eager")``, f32, CPU,
eval mode) runs once under ``torch.no_grad()``, and the run file is written with
``candlelight_torch.save_run`` (atomic). OUT (default ``runs/hf``) is a folder
(receives ``<run-id>.safetensors``) or a ``.safetensors`` path. Prints the run
file's path on stdout; ``--list`` also prints every layer (name, kind, dtype,
shape) and the tokens on stderr; ``--self-check`` records "The quick brown fox
jumps over the lazy dog.", lists it and checks the run (see :func:`self_check`).
An error is one line on stderr naming the file or folder, exit code 2.

Names (the same as candle's ``with_tracing`` layers and ``Scope``, so
``candlelight diff CANDLE_RUN HF_RUN`` needs no name map):

- ``input_ids`` (kind ``input``) first;
- every module's output under its ``named_modules()`` path
  (``embeddings.word_embeddings``, ``encoder.layer.0.attention.self.query``,
  ``encoder.layer.0.attention.self``, ``encoder``), in the order the hooks fire;
  the root module's under ``output``; a tuple or ``ModelOutput`` output is
  recorded as its first tensor (``last_hidden_state``), outputs without a tensor
  are skipped;
- each self-attention module ``P``'s attention probabilities
  (``[batch, heads, T, T]``, after softmax) under ``P.attention_probs`` (kind
  ``attention_probs``), right after ``P``'s output;
- kinds: ``linear``, ``layer_norm``, ``embedding``, ``dropout``, otherwise the
  class name in snake case (``bert_self_attention``, ``gelu_activation``);
- run facts: ``tokens`` (one list of token strings per sample) and tags
  ``source``, ``transformers``, ``torch``.

Needs ``torch``, ``transformers``, ``tokenizers`` and ``numpy``.
"""

import argparse
import json
import os
import struct
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    import candlelight_torch  # noqa: E402  (needs numpy)
except ImportError as _e:  # reported as one line by the CLI
    candlelight_torch, _IMPORT_ERROR = None, _e

__all__ = ["record_hf", "encode", "load", "self_check", "listing", "ROOT_NAME", "ATTENTION_PROBS"]

#: The name the root module's output is recorded under (candle: ``Scope::ROOT_NAME``).
ROOT_NAME = "output"
#: Suffix of attention probabilities (candle: ``Scope::ATTENTION_PROBS``).
ATTENTION_PROBS = "attention_probs"
#: The layer the input ids are recorded under, first.
INPUT_IDS = "input_ids"
#: The sentence ``--self-check`` records.
SELF_CHECK_SENTENCE = "The quick brown fox jumps over the lazy dog."

# Encoding keys that are not model inputs.
_NOT_INPUTS = {"offset_mapping", "special_tokens_mask", "overflow_to_sample_mapping", "length"}


class Failure(Exception):
    """An error the CLI reports as one line (exit code 2)."""


def encode(tokenizer, texts):
    """Tokenizes ``texts`` (a string or a list of them) with special tokens, no
    truncation, padded to the longest (so equal texts are not padded). Returns
    ``(inputs, tokens)``: a dict of int64 torch tensors (``input_ids``,
    ``attention_mask``, ``token_type_ids``) and one list of token strings per text.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` (its own padding and truncation
    settings, e.g. MiniLM's fixed 128-token padding, are not used; it is not
    changed) or a transformers fast tokenizer."""
    import torch

    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("no text to encode")
    if hasattr(tokenizer, "encode_batch") and hasattr(tokenizer, "to_str"):
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(tokenizer.to_str())  # a copy: the caller's settings stay
        tok.no_truncation()
        tok.no_padding()
        if len(texts) > 1:
            pad = tok.token_to_id("[PAD]")
            tok.enable_padding(pad_id=0 if pad is None else pad, pad_token="[PAD]")
        encs = tok.encode_batch(texts, add_special_tokens=True)
        inputs = {
            "input_ids": torch.tensor([e.ids for e in encs], dtype=torch.int64),
            "attention_mask": torch.tensor([e.attention_mask for e in encs], dtype=torch.int64),
            "token_type_ids": torch.tensor([e.type_ids for e in encs], dtype=torch.int64),
        }
        return inputs, [list(e.tokens) for e in encs]
    enc = tokenizer(texts, add_special_tokens=True, padding="longest", truncation=False, return_tensors="pt")
    return _split_encoding(enc, None)


def _split_encoding(enc, tokens):
    """(model inputs, tokens) of a transformers ``BatchEncoding`` or a plain dict."""
    inputs = {k: v for k, v in dict(enc).items() if k not in _NOT_INPUTS}
    if "input_ids" not in inputs:
        raise ValueError("the encoding has no input_ids")
    if tokens is None and getattr(enc, "encodings", None):
        tokens = [list(enc.tokens(i)) for i in range(len(enc.encodings))]
    return inputs, tokens


def _attention_classes(model):
    """``{class: index}`` of the modules whose output ``index`` is attention
    probabilities: what the model declares (transformers 5:
    ``_can_record_outputs["attentions"]``, a class or ``OutputRecorder``s) and
    every class whose name ends in ``SelfAttention`` (transformers 4; index 1)."""
    declared = (getattr(model, "_can_record_outputs", None) or {}).get("attentions")
    declared = declared if isinstance(declared, (list, tuple)) else [declared]
    classes = {}
    for d in declared:
        if isinstance(d, type):
            classes[d] = 1
        elif isinstance(getattr(d, "target_class", None), type) and getattr(d, "layer_name", None) is None:
            classes[d.target_class] = getattr(d, "index", 1)
    for m in model.modules():
        if type(m).__name__.endswith("SelfAttention"):
            classes.setdefault(type(m), 1)
    return classes


def _probs_index(classes, module):
    """The output index of ``module``'s attention probabilities, or ``None``."""
    for cls, index in classes.items():
        if isinstance(module, cls):
            return index
    return None


def record_hf(
    model,
    tokenizer_or_encoding,
    text=None,
    model_name=None,
    input=None,
    tokens=None,
    attention_probs=True,
):
    """Records one forward pass of the HF transformers ``model`` with the names
    described in the module docstring; returns a ``candlelight_torch.Recording``
    (``save_run`` it). ``rec.output`` is what the model returned.

    ``tokenizer_or_encoding``: a tokenizer (then ``text``, a string or a list of
    strings, is encoded with :func:`encode`) or an encoding (a transformers
    ``BatchEncoding`` or a dict of tensors with ``input_ids``; ``tokens``, one
    list per sample, if it carries none). ``attention_probs`` asks the model for
    its attention weights (``output_attentions=True``): load it with
    ``attn_implementation="eager"``, or there are none (a warning says so).
    """
    import torch

    if text is not None:
        inputs, tokens = encode(tokenizer_or_encoding, text)
    elif hasattr(tokenizer_or_encoding, "keys"):
        inputs, tokens = _split_encoding(tokenizer_or_encoding, tokens)
    else:
        raise ValueError("record_hf: pass text= with a tokenizer, or an encoding with input_ids")

    classes = _attention_classes(model) if attention_probs else {}
    seen = {}

    def extra(name, module, output):
        index = _probs_index(classes, module)
        if index is None or not isinstance(output, (tuple, list)) or len(output) <= index:
            return ()
        probs = output[index]
        if not (torch.is_tensor(probs) and probs.dim() == 4):
            return ()
        seen[name] = True
        return [("%s.%s" % (name, ATTENTION_PROBS), ATTENTION_PROBS, probs)]

    kwargs = dict(inputs)
    if attention_probs:
        kwargs["output_attentions"] = True
    if input is None:
        input = text if isinstance(text, str) else json.dumps(text) if text is not None else ""
    rec = candlelight_torch.record(
        model,
        model_name=model_name or getattr(getattr(model, "config", None), "model_type", None),
        input=input,
        include_root=True,
        root_name=ROOT_NAME,
        first_tensor=True,
        kind_of=candlelight_torch.snake_kind,
        extra=extra,
        **kwargs,
    )
    if attention_probs and not seen:
        _probs_from_outputs(model, rec, classes)
    rec[INPUT_IDS] = inputs["input_ids"].detach().to("cpu").clone()
    rec.kinds[INPUT_IDS] = "input"
    rec.move_to_end(INPUT_IDS, last=False)
    rec.tokens = tokens
    return rec


def _probs_from_outputs(model, rec, classes):
    """Falls back on ``output.attentions`` (one per self-attention module, in
    module order) when the modules' outputs did not carry them; warns if there
    are none at all."""
    attentions = getattr(rec.output, "attentions", None)
    paths = [n for n, m in model.named_modules() if _probs_index(classes, m) is not None and n in rec]
    if not attentions or len(attentions) != len(paths) or any(a is None for a in attentions):
        warnings.warn(
            "no attention probabilities recorded: load the model with attn_implementation=\"eager\""
        )
        return
    items = list(rec.items())
    rec.clear()
    by_path = dict(zip(paths, attentions))
    for name, value in items:
        rec[name] = value
        if name in by_path:
            key = "%s.%s" % (name, ATTENTION_PROBS)
            rec[key] = by_path[name].detach().to("cpu").clone()
            rec.kinds[key] = ATTENTION_PROBS


def load(model_dir):
    """``(model, tokenizer)`` from a folder: the transformers ``AutoModel`` (eager
    attention, f32, CPU, eval mode) and the ``tokenizers.Tokenizer`` of its
    ``tokenizer.json``. Raises :class:`Failure` naming the folder or file."""
    if not os.path.isdir(model_dir):
        raise Failure("%s: no such model folder" % model_dir)
    for f in ("config.json", "tokenizer.json"):
        if not os.path.isfile(os.path.join(model_dir, f)):
            raise Failure("%s: missing (the model folder needs config.json, weights and tokenizer.json)"
                          % os.path.join(model_dir, f))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never ask the Hub
    try:
        import torch
        import transformers
        from tokenizers import Tokenizer
    except ImportError as e:
        raise Failure("needs torch, transformers and tokenizers (pip install torch transformers tokenizers): %s" % e)
    transformers.logging.set_verbosity_error()
    try:
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:
        pass
    try:
        tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    except Exception as e:
        raise Failure("%s: cannot read the tokenizer: %s" % (os.path.join(model_dir, "tokenizer.json"), _line(e)))
    try:
        model = transformers.AutoModel.from_pretrained(model_dir, attn_implementation="eager")
    except Exception as e:
        raise Failure("%s: cannot load the model: %s" % (model_dir, _line(e)))
    model = model.to(device="cpu", dtype=torch.float32).eval()
    return model, tokenizer


def _line(e):
    """An exception as one line."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def default_model_name(model_dir):
    """The folder's name (its parent's when it is just ``model``)."""
    path = os.path.abspath(model_dir)
    name = os.path.basename(path)
    if name in ("model", "models", ""):
        name = os.path.basename(os.path.dirname(path)) or name
    return name or "hf"


def read_header(path):
    """``(header, metadata)`` of a safetensors file, read with plain Python."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return header, header.pop("__metadata__", {})


def listing(path):
    """Lines describing the run file at ``path``: one per layer in capture order
    (position, name, kind, dtype, shape), then the tokens."""
    header, meta = read_header(path)
    order = json.loads(meta["candlelight.order"])
    info = json.loads(meta["candlelight.run"])
    kinds = info.get("kinds", {})
    width = max(len(n) for n in order)
    lines = [
        "%3d  %-*s  %-20s %-4s %s" % (i, width, n, kinds.get(n, ""), header[n]["dtype"], header[n]["shape"])
        for i, n in enumerate(order)
    ]
    for i, t in enumerate(info.get("tokens") or []):
        lines.append("tokens[%d] (%d): %s" % (i, len(t), json.dumps(t)))
    return lines


def self_check(rec, path, model_dir=None, model=None):
    """Checks a recording and its run file; returns a list of problems (empty:
    fine). Checked: ``input_ids`` first and ``output`` last; every other layer
    f32; ``output`` equal to ``encoder`` (``last_hidden_state``) and to what the
    model returned; one ``attention_probs`` layer right after each self-attention
    module (of ``model``, when given), ``[batch, heads, T, T]``, rows summing
    to 1; tokens match the ids'
    shape (and, with ``model_dir``, transformers' own tokenizer gives the same
    ids and tokens); the file's order, dtypes, shapes and ``tokens`` are the
    recording's."""
    import torch

    bad = []
    names = list(rec)
    ids = rec[INPUT_IDS]
    batch, length = ids.shape
    if names[0] != INPUT_IDS or names[-1] != ROOT_NAME:
        bad.append("order: %s first, %s last (want %s, %s)" % (names[0], names[-1], INPUT_IDS, ROOT_NAME))
    for n, v in rec.items():
        if n != INPUT_IDS and v.dtype != torch.float32:
            bad.append("%s: dtype %s, not f32" % (n, v.dtype))
    last = getattr(rec.output, "last_hidden_state", None)
    if last is None or not torch.equal(rec[ROOT_NAME], last):
        bad.append("output: not the model's last_hidden_state")
    if "encoder" in rec and not torch.equal(rec["encoder"], rec[ROOT_NAME]):
        bad.append("encoder: not equal to output")
    probs = [n for n in names if n.endswith("." + ATTENTION_PROBS)]
    if not probs:
        bad.append("no %s layers" % ATTENTION_PROBS)
    if model is not None:
        classes = _attention_classes(model)
        owners = [n for n, m in model.named_modules() if _probs_index(classes, m) is not None]
        if [n + "." + ATTENTION_PROBS for n in owners] != probs:
            bad.append("%s layers %s, want one per self-attention module %s" % (ATTENTION_PROBS, probs, owners))
    for n in probs:
        owner = n[: -len(ATTENTION_PROBS) - 1]
        p = rec[n]
        if names.index(n) != names.index(owner) + 1:
            bad.append("%s: not right after %s" % (n, owner))
        if p.dim() != 4 or (p.shape[0], p.shape[2], p.shape[3]) != (batch, length, length):
            bad.append("%s: shape %s, want [%d, heads, %d, %d]" % (n, list(p.shape), batch, length, length))
        elif (p.sum(-1) - 1).abs().max() > 1e-5:
            bad.append("%s: rows do not sum to 1" % n)
    if rec.tokens is None or [len(t) for t in rec.tokens] != [length] * batch:
        bad.append("tokens: %r do not match input_ids %s" % (rec.tokens, list(ids.shape)))
    if model_dir is not None:
        bad += _check_transformers_tokenizer(model_dir, rec)
    header, meta = read_header(path)
    info = json.loads(meta["candlelight.run"])
    if json.loads(meta["candlelight.order"]) != names:
        bad.append("%s: order differs from the recording" % path)
    for n, v in rec.items():
        want = "I64" if n == INPUT_IDS else "F32"
        if header[n]["dtype"] != want or header[n]["shape"] != list(v.shape):
            bad.append("%s: %s %s in the file" % (n, header[n]["dtype"], header[n]["shape"]))
    if info.get("tokens") != rec.tokens:
        bad.append("%s: tokens differ from the recording" % path)
    return bad


def _check_transformers_tokenizer(model_dir, rec):
    """transformers' ``AutoTokenizer`` of the folder gives the recorded ids and tokens."""
    from transformers import AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers 4.44's clean_up_tokenization_spaces notice
        tok = AutoTokenizer.from_pretrained(model_dir)
    texts = [SELF_CHECK_SENTENCE] * rec[INPUT_IDS].shape[0]
    inputs, tokens = encode(tok, texts)
    if inputs["input_ids"].tolist() != rec[INPUT_IDS].tolist() or tokens != rec.tokens:
        return ["AutoTokenizer: %s / %s differ from tokenizer.json's" % (inputs["input_ids"].tolist(), tokens)]
    return []


def _check_out(out):
    """Fails early, naming it, when the output folder cannot be one."""
    folder = (os.path.dirname(out) or ".") if out.endswith(".safetensors") else out
    while folder and not os.path.exists(folder):
        folder = os.path.dirname(folder.rstrip("/"))
    if folder and not os.path.isdir(folder):
        raise Failure("%s: not a folder (output %s)" % (folder, out))
    if out.endswith(".safetensors") and os.path.isdir(out):
        raise Failure("%s: is a folder, not a run file" % out)


def run(args):
    """The CLI's work; raises :class:`Failure`."""
    if candlelight_torch is None:
        raise Failure("needs numpy (pip install numpy): %s" % _IMPORT_ERROR)
    sentence = SELF_CHECK_SENTENCE if args.self_check else args.sentence
    if sentence is None:
        raise Failure("a sentence is needed (or --self-check)")
    _check_out(args.out)
    model, tokenizer = load(args.model_dir)
    import torch
    import transformers

    texts = [sentence] * args.batch
    rec = record_hf(
        model,
        tokenizer,
        text=texts,
        model_name=args.model_name or default_model_name(args.model_dir),
        input=sentence if args.batch == 1 else "%s (x%d)" % (sentence, args.batch),
    )
    tags = {"source": "candlelight_hf", "transformers": transformers.__version__, "torch": torch.__version__}
    try:
        path = candlelight_torch.save_run(rec, args.out, tags=tags)
    except OSError as e:
        raise Failure("%s: cannot write the run: %s" % (e.filename or args.out, e.strerror or _line(e)))
    print(path, flush=True)
    if args.list or args.self_check:
        for line in listing(path):
            print(line, file=sys.stderr)
    if args.self_check:
        bad = self_check(rec, path, args.model_dir, model)
        for b in bad:
            print("self-check: " + b, file=sys.stderr)
        if bad:
            raise Failure("%s: self-check failed (%d problem(s))" % (path, len(bad)))
        print("self-check: ok (%d layers; transformers %s, torch %s)"
              % (len(rec), transformers.__version__, torch.__version__), file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line (exit code 2)."""

    def error(self, message):
        self.exit(2, "candlelight_hf: %s (see --help)\n" % message)


def main(argv=None):
    ap = _Parser(
        prog="candlelight_hf.py",
        description="Record a HF transformers model's every module output (and attention "
        "probabilities) on one sentence into a candlelight run file; prints its path.",
    )
    ap.add_argument("model_dir", metavar="MODEL_DIR", help="folder with config.json, weights, tokenizer.json")
    ap.add_argument("sentence", nargs="?", help="the input text")
    ap.add_argument("-o", "--out", default=os.path.join("runs", "hf"),
                    help="folder for <run-id>.safetensors, or a .safetensors path (default runs/hf)")
    ap.add_argument("--batch", type=int, default=1, metavar="N", help="repeat the sentence N times (default 1)")
    ap.add_argument("--model-name", help="model name in the run facts and id (default: the folder's name)")
    ap.add_argument("--list", action="store_true", help="print the layers and tokens on stderr")
    ap.add_argument("--self-check", action="store_true",
                    help="record %r, list it and check the run" % SELF_CHECK_SENTENCE)
    args = ap.parse_args(argv)
    if args.batch < 1:
        ap.error("--batch must be at least 1")
    try:
        run(args)
    except Failure as e:
        print("candlelight_hf: %s" % e, file=sys.stderr)
        return 2
    except Exception as e:  # one line, as promised; CANDLELIGHT_DEBUG=1 shows the traceback
        if os.environ.get("CANDLELIGHT_DEBUG"):
            raise
        print("candlelight_hf: %s: %s: %s" % (args.model_dir, type(e).__name__, _line(e)), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
