"""PyTorch reference of candlelight's MNIST CNN: records a run to diff a candle run against.

    python python/mnist_reference.py WEIGHTS INPUT OUT

WEIGHTS: the model's safetensors weights (``conv1.weight`` ... ``fc2.bias``, e.g.
``weights/mnist_cnn.safetensors``); INPUT: a safetensors file with a tensor
``input`` of shape [N, 1, 28, 28]; OUT: a folder (receives ``<run-id>.safetensors``)
or a ``.safetensors`` path. Prints the run file's path.

The modules are named like the candle layers (``conv1``, ``relu1``, ``pool1``, ...),
so ``candlelight diff CANDLE_RUN TORCH_RUN`` needs no name map. Layer sizes come
from the weights' shapes. Needs ``torch``, ``safetensors`` and ``numpy``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import candlelight_torch  # noqa: E402


def build(weights):
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
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()}, strict=True)
    return model.eval()


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    weights_path, input_path, out = argv
    from safetensors.numpy import load_file
    import torch

    weights = load_file(weights_path)
    x = torch.from_numpy(load_file(input_path)["input"].copy()).float()
    model = build(weights)
    rec = candlelight_torch.record(
        model, x, model_name="mnist-cnn", input=os.path.basename(input_path) + " (pytorch reference)"
    )
    print(candlelight_torch.save_run(rec, out))


if __name__ == "__main__":
    main(sys.argv[1:])
