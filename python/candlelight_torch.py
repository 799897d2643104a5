"""Record a PyTorch model's module outputs into a candlelight run file.

The run file is candlelight's format version 1 (docs/FORMAT.md): a plain
safetensors file whose tensor names are the module paths (``conv1``,
``features.0``), with the capture order and the run facts in its metadata, so
``candlelight diff port.safetensors reference.safetensors`` compares a candle
port with its PyTorch reference layer by layer.

    import torch, candlelight_torch as cl
    rec = cl.record(model, x, model_name="mnist-cnn", input="digit 7")
    path = cl.save_run(rec, "runs/torch")      # runs/torch/<run-id>.safetensors

``record`` needs ``torch`` (imported when it is called); ``save_run`` needs only
``numpy`` and accepts numpy arrays as well as torch tensors, so the file side can
be used and tested without torch.

Modules called more than once get ``#2``, ``#3``, ... appended, as in candle
runs. A module returning a tuple, list or dict has its tensors recorded as
``name.0``, ``name.1``, ... (or ``name.<key>``), or, with ``first_tensor=True``,
as its first tensor under ``name`` (what HF transformers models need: a
``ModelOutput`` is recorded as its ``last_hidden_state``; see
``candlelight_hf.py``). Only modules are seen: a
functional call (``F.relu(x)``) records nothing, so write the reference with
``nn.ReLU()`` / ``nn.MaxPool2d(2)`` modules named like the candle layers, or map
names with ``candlelight diff --map``.
"""

import datetime
import json
import os
import random
import re
import struct
from collections import OrderedDict

import numpy as np

__all__ = ["FORMAT_VERSION", "Recording", "record", "save_run", "new_run_id", "snake_kind"]

#: Run file format version written into ``candlelight.version``.
FORMAT_VERSION = "1"

KEY_VERSION = "candlelight.version"
KEY_ORDER = "candlelight.order"
KEY_RUN = "candlelight.run"

# numpy dtype (kind, bytes) -> safetensors dtype name; data is written little-endian.
_NUMPY_DTYPES = {
    ("f", 8): "F64",
    ("f", 4): "F32",
    ("f", 2): "F16",
    ("i", 8): "I64",
    ("i", 4): "I32",
    ("i", 2): "I16",
    ("i", 1): "I8",
    ("u", 8): "U64",
    ("u", 4): "U32",
    ("u", 2): "U16",
    ("u", 1): "U8",
    ("b", 1): "BOOL",
}


class Recording(OrderedDict):
    """Layer name -> tensor, in capture order, plus what ``save_run`` needs.

    Attributes: ``kinds`` (name -> module class name in lower case: ``conv2d``,
    ``linear``, ``relu``, ``maxpool2d``; or what ``record``'s ``kind_of`` says),
    ``model``, ``input``, ``output`` (what the model returned), ``tokens`` (one
    list of token strings per sample, or ``None``).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kinds = {}
        self.model = ""
        self.input = ""
        self.output = None
        self.tokens = None


# torch class names whose snake case the plain rule gets wrong (``ReLU`` -> ``re_lu``).
_KIND_NAMES = {
    "LayerNorm": "layer_norm",
    "ReLU": "relu",
    "ReLU6": "relu6",
    "LeakyReLU": "leaky_relu",
    "PReLU": "prelu",
    "SiLU": "silu",
    "GELU": "gelu",
    "RMSNorm": "rms_norm",
}


def snake_kind(module):
    """The layer kind of ``module`` in candle's style: its class name in snake case
    (``Linear`` -> ``linear``, ``LayerNorm`` -> ``layer_norm``, ``MaxPool2d`` ->
    ``max_pool2d``, ``BertSelfAttention`` -> ``bert_self_attention``,
    ``GELUActivation`` -> ``gelu_activation``)."""
    name = type(module).__name__
    if name in _KIND_NAMES:
        return _KIND_NAMES[name]
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def _first_tensor(value, is_tensor):
    """The first tensor in ``value`` (itself, or depth-first in a tuple, list or
    dict such as a ``ModelOutput``); ``None`` if there is none."""
    if is_tensor(value):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        for v in value:
            t = _first_tensor(v, is_tensor)
            if t is not None:
                return t
    return None


def record(
    model,
    *inputs,
    model_name=None,
    input="",
    include_root=False,
    root_name="output",
    first_tensor=False,
    kind_of=None,
    extra=None,
    **kwargs
):
    """Runs ``model(*inputs, **kwargs)`` under ``torch.no_grad()`` with a forward
    hook on every submodule and returns a :class:`Recording` of their outputs
    (detached, on the CPU) in the order they ran.

    ``model_name`` defaults to the model's class name in lower case; ``input``
    describes the input; ``include_root`` also records the model's own output
    under ``root_name`` (``output``). ``first_tensor`` records a tuple, list or
    dict output as its first tensor under the module's name instead of
    ``name.0``, ``name.1``, ...; outputs holding no tensor are skipped.
    ``kind_of(module)`` gives the layer kind (default: the class name in lower
    case; :func:`snake_kind` is candle's style). ``extra(name, module, output)``
    may return ``(name, kind, tensor)`` triples recorded right after the
    module's own output (e.g. the attention probabilities a module returns next
    to its output).
    """
    import torch  # only here: save_run works without torch

    rec = Recording()
    rec.model = model_name or type(model).__name__.lower()
    rec.input = input
    counts = {}
    kind_of = kind_of or (lambda m: type(m).__name__.lower())

    def put(name, kind, value):
        if first_tensor:
            value = _first_tensor(value, torch.is_tensor)
        if isinstance(value, torch.Tensor):
            n = counts.get(name, 0) + 1
            counts[name] = n
            key = name if n == 1 else "%s#%d" % (name, n)
            # A copy: a later in-place op (nn.ReLU(inplace=True)) must not change it.
            rec[key] = value.detach().to("cpu").clone(memory_format=torch.contiguous_format)
            rec.kinds[key] = kind
        elif isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                put("%s.%d" % (name, i), kind, v)
        elif isinstance(value, dict):
            for k, v in value.items():
                put("%s.%s" % (name, k), kind, v)

    handles = []
    try:
        for name, module in model.named_modules():
            if name == "" and not include_root:
                continue
            kind = kind_of(module)
            label = name or root_name

            def hook(module, _args, output, label=label, kind=kind):
                put(label, kind, output)
                if extra is not None:
                    for n, k, v in extra(label, module, output) or ():
                        put(n, k, v)

            handles.append(module.register_forward_hook(hook))
        with torch.no_grad():
            rec.output = model(*inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return rec


def _sanitize(s, limit=96):
    out = re.sub(r"[^A-Za-z0-9._-]", "-", s)[:limit]
    while out.startswith("."):
        out = "_" + out[1:]
    return out or "_"


def new_run_id(model):
    """A fresh run id ``YYYYMMDD-HHMMSS-<model>-<4 hex>`` (UTC), ``[A-Za-z0-9._-]`` only."""
    model = _sanitize(model or "run")[:48]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return "%s-%s-%04x" % (stamp, model, random.getrandbits(16))


def _as_array(value):
    """(safetensors dtype name, shape, little-endian bytes) of a numpy array or torch tensor."""
    mod = type(value).__module__
    if mod.startswith("torch"):
        import torch

        t = value.detach().to("cpu").contiguous()
        if t.dtype == torch.bfloat16:
            # numpy has no bfloat16: keep the raw 16-bit patterns.
            raw = t.view(torch.int16).numpy().astype("<i2", copy=False)
            return "BF16", tuple(t.shape), raw.tobytes()
        value = t.numpy()
    arr = np.asarray(value)
    dtype = _NUMPY_DTYPES.get((arr.dtype.kind, arr.dtype.itemsize))
    if dtype is None:
        raise TypeError("dtype %s cannot be stored in a run file" % arr.dtype)
    arr = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False))
    return dtype, tuple(arr.shape), arr.tobytes()


def save_run(
    tensors, path_or_dir, model=None, input=None, kinds=None, tags=None, metadata=None, tokens=None
):
    """Writes ``tensors`` (name -> numpy array or torch tensor, in capture order;
    a :class:`Recording` or any ordered mapping, or a list of pairs) as a
    version-1 run file and returns its path.

    ``path_or_dir`` ending in ``.safetensors`` is the file to write (replaced if
    it exists); anything else is a folder (created if needed) that receives
    ``<run-id>.safetensors``. ``model``, ``input`` and ``kinds`` default to the
    recording's; ``tags`` (str -> str) go into the run facts and ``metadata``
    (str -> str) into the file's own metadata. ``tokens`` (one list of token
    strings per sample; default: the recording's, if any) goes into the run
    facts as ``tokens``, so pictures can label token axes. The file is written as a dot
    temp file in the same folder, flushed, fsynced and renamed into place, so a
    reader (or ``candlelight watch``) never sees half a run.
    """
    items = list(tensors.items()) if hasattr(tensors, "items") else list(tensors)
    model = model if model is not None else getattr(tensors, "model", "") or "run"
    input = input if input is not None else getattr(tensors, "input", "")
    kinds = dict(kinds if kinds is not None else getattr(tensors, "kinds", {}))
    tokens = tokens if tokens is not None else getattr(tensors, "tokens", None)
    if tokens is not None:
        if isinstance(tokens, str) or any(isinstance(t, str) for t in tokens):
            raise ValueError("tokens: expected one list of token strings per sample, got %r" % (tokens,))
        tokens = [[str(t) for t in sample] for sample in tokens]

    names = [n for n, _ in items]
    if len(set(names)) != len(names):
        raise ValueError("duplicate layer names in %r" % names)
    for n in names:
        if not isinstance(n, str) or not n or n == "__metadata__":
            raise ValueError("bad layer name %r" % (n,))

    run_id = new_run_id(model)
    info = {
        "id": run_id,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": model,
        "input": input,
    }
    known = set(names)
    kinds = {n: str(k) for n, k in kinds.items() if n in known}
    if kinds:
        info["kinds"] = kinds
    if tags:
        info["tags"] = {str(k): str(v) for k, v in tags.items()}
    if tokens is not None:
        info["tokens"] = tokens

    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta[KEY_VERSION] = FORMAT_VERSION
    meta[KEY_ORDER] = json.dumps(names)
    meta[KEY_RUN] = json.dumps(info)

    # safetensors layout: u64 header length, JSON header (space-padded to 8 bytes),
    # then the tensors' bytes back to back, here in capture order.
    header = OrderedDict([("__metadata__", meta)])
    blobs = []
    offset = 0
    for name, value in items:
        dtype, shape, raw = _as_array(value)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)

    target = str(path_or_dir)
    if target.endswith(".safetensors"):
        folder = os.path.dirname(target) or "."
    else:
        folder = target
        target = os.path.join(folder, _sanitize(run_id) + ".safetensors")
        if os.path.exists(target):
            raise FileExistsError(target)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, ".%s.%d.tmp" % (os.path.basename(target), os.getpid()))
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(head)))
            f.write(head)
            for raw in blobs:
                f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return target
