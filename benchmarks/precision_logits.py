"""Where bfloat16 loses VGG8b sigprop's class differences: per layer, on the same weights and
minibatch, the logits O(h, t_k) of L_pred in float32 and under bfloat16 autocast (issue 30).

Trains ``vgg8b-fmnist`` on digits for ``--epochs`` (float32, seeded; or takes ``--checkpoint``)
and prints, per layer: the spread of the float32 logits over the m classes (std over k, mean
over samples), their magnitude, and the error of the centered bfloat16 logits (logit minus its
mean over k: what the cross entropy sees) relative to that spread, with the comparison in
bfloat16 as ctsp computed it before issue 30 and in float32 from the bfloat16 h and t as it
does now (``ctsp.nn.compare``).

    python benchmarks/precision_logits.py            # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from ctsp import config as cfg
from ctsp import data as datasets
from ctsp.app import train
from ctsp.nn import autocast
from ctsp.nn.compare import _flat_pair
from ctsp.runs import machine_line
from models import build_discrete_network

CPU = torch.device("cpu")


def bfloat16_dot(h, t):
    """O_dot as a bfloat16 product (ctsp before issue 30)."""
    hf, tf, _, scale = _flat_pair(h, t)
    product = hf @ tf.T if tf.dim() == 2 else torch.einsum("bd,bmd->bm", hf, tf)
    return product * scale


def pairs(net, x, precision):
    with torch.no_grad(), autocast(CPU, precision):
        yield from zip(net.names, net.pairs(x), strict=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--checkpoint", help="a float32 vgg8b-fmnist digits run's checkpoint.pt")
    args = parser.parse_args()
    overrides = [(["data", "name"], "digits"), (["data", "crop"], 0), (["data", "validation"], 0)]
    config = cfg.with_overrides(cfg.load("vgg8b-fmnist", cfg.DiscreteRunConfig), overrides)
    config = cfg.with_overrides(config, [(["train", "epochs"], args.epochs)])
    data = datasets.load("digits")
    if args.checkpoint:
        state = torch.load(args.checkpoint, weights_only=False)["model"]
    else:
        with tempfile.TemporaryDirectory() as out:
            state = train(config, f"{out}/run", progress=False, log=lambda line: None).network
            state = state.state_dict()
    torch.manual_seed(0)
    net = build_discrete_network(config, data.image_shape, data.classes)
    net.load_state_dict(state)
    net.eval()
    x = data.train_x[:128].contiguous(memory_format=torch.channels_last)
    print(
        f"Machine: {machine_line()}. vgg8b-fmnist on digits, {args.epochs} float32 epochs, "
        "128 training images.\n"
    )
    print(
        "| layer | spread over k (float32) | mean abs logit | error / spread, bfloat16 product "
        "| error / spread, float32 comparison |"
    )
    print("|---|---|---|---|---|")
    low = dict(pairs(net, x, "bfloat16"))
    for name, (h, t) in pairs(net, x, "float32"):
        if t is None:
            continue
        exact = bfloat16_dot(h, t)
        centered = exact - exact.mean(1, keepdim=True)
        spread = float(centered.std(1).mean())
        hb, tb = low[name]
        with autocast(CPU, "bfloat16"):
            before = bfloat16_dot(hb, tb).float()
        after = bfloat16_dot(hb.float(), tb.float())
        errors = [
            float(((v - v.mean(1, keepdim=True)) - centered).abs().mean()) / spread
            for v in (before, after)
        ]
        print(
            f"| {name} | {spread:.3g} | {float(exact.abs().mean()):.3g} | {errors[0]:.3f} | "
            f"{errors[1]:.3f} |"
        )


if __name__ == "__main__":
    main()
