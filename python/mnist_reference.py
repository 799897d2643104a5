"""PyTorch reference of candlelight's MNIST CNN: records a run to diff a candle run against.

    python python/mnist_reference.py WEIGHTS INPUT OUT

WEIGHTS: the model's safetensors weights (``weights/mnist_cnn.safetensors``);
INPUT: a digit as an 8-bit grayscale PNG (like ``assets/digits/digit-3.png``;
normalized as candle's ``image_to_input`` does) or a safetensors file with a
tensor ``input`` of shape [N, 1, 28, 28]; OUT: a folder (receives
``<run-id>.safetensors``) or a ``.safetensors`` path. Prints the run file's path.

The modules are named like the candle layers (``conv1``, ``relu1``, ``pool1``, ...,
``softmax``), so ``candlelight diff CANDLE_RUN TORCH_RUN`` needs no name map.
Layer sizes come from the weights' shapes. Needs ``torch``, ``safetensors``, ``numpy``.
"""

import os
import struct
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import candlelight_torch  # noqa: E402

MEAN = np.float32(0.1307)
STD = np.float32(0.3081)


def build(weights):
    """The MNIST CNN with ``weights`` (name -> numpy array) loaded, in eval mode."""
    import torch
    from torch import nn

    c1, _, k1, _ = weights["conv1.weight"].shape
    c2, _, k2, _ = weights["conv2.weight"].shape
    hidden, flat = weights["fc1.weight"].shape
    classes = weights["fc2.weight"].shape[0]

    class MnistCnn(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, c1, k1)
            self.relu1 = nn.ReLU()
            self.pool1 = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(c1, c2, k2)
            self.relu2 = nn.ReLU()
            self.pool2 = nn.MaxPool2d(2)
            self.flatten = nn.Flatten(1)
            self.fc1 = nn.Linear(flat, hidden)
            self.relu3 = nn.ReLU()
            self.fc2 = nn.Linear(hidden, classes)
            self.softmax = nn.Softmax(dim=1)

        def forward(self, x):
            for m in self.children():
                x = m(x)
            return x

    model = MnistCnn()
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, strict=True)
    return model.eval()


def read_gray_png(path):
    """An 8-bit grayscale, non-interlaced PNG as a uint8 array [H, W] (stdlib only)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("%s: not a PNG file" % path)
    pos, idat, head = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            head = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    if head is None:
        raise ValueError("%s: no IHDR chunk" % path)
    w, h, depth, color, _, _, interlace = head
    if depth != 8 or color != 0 or interlace != 0:
        raise ValueError(
            "%s: only 8-bit grayscale non-interlaced PNGs are read here "
            "(bit depth %d, colour type %d, interlace %d); pass a .safetensors input instead"
            % (path, depth, color, interlace)
        )
    raw = zlib.decompress(idat)
    out = np.zeros((h, w), dtype=np.uint8)
    prev = np.zeros(w, dtype=np.int32)
    for y in range(h):
        ftype = raw[y * (w + 1)]
        line = np.frombuffer(raw, dtype=np.uint8, count=w, offset=y * (w + 1) + 1).astype(np.int32)
        cur = np.zeros(w, dtype=np.int32)
        for x in range(w):
            a = cur[x - 1] if x > 0 else 0
            b = prev[x]
            c = prev[x - 1] if x > 0 else 0
            if ftype == 0:
                pred = 0
            elif ftype == 1:
                pred = a
            elif ftype == 2:
                pred = b
            elif ftype == 3:
                pred = (a + b) // 2
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            else:
                raise ValueError("%s: bad PNG filter type %d" % (path, ftype))
            cur[x] = (line[x] + pred) & 0xFF
        out[y] = cur
        prev = cur
    return out


def load_input(path):
    """Model input [N, 1, 28, 28] float32 from a PNG digit or a safetensors file."""
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        return np.asarray(load_file(path)["input"], dtype=np.float32)
    pixels = read_gray_png(path)
    if pixels.shape != (28, 28):
        raise ValueError("%s: expected a 28x28 digit, got %dx%d" % (path, pixels.shape[1], pixels.shape[0]))
    # The same f32 operations as candle's `normalize`: (p / 255 - mean) / std.
    x = (pixels.astype(np.float32) / np.float32(255.0) - MEAN) / STD
    return x.reshape(1, 1, 28, 28)


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: python python/mnist_reference.py WEIGHTS INPUT OUT")
    weights_path, input_path, out = argv
    import torch
    from safetensors.numpy import load_file

    model = build(load_file(weights_path))
    x = torch.from_numpy(load_input(input_path))
    rec = candlelight_torch.record(model, x, model_name="mnist-cnn", input=input_path)
    print(candlelight_torch.save_run(rec, out))


if __name__ == "__main__":
    main(sys.argv[1:])
