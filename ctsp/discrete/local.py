"""Local learning (Noekland & Eidnes 2019, "predsim"): every block trained by its own
similarity-matching and prediction loss, its input detached (``train.rule`` = "ll-bp", "ll-fa")."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..nn import Conv2d, Linear
from .feedback import feedback_alignment, fixed_generator
from .learner import Rules
from .lpred import ClassifierCE, LPred

PREDSIM_BETA = 0.99  # weight of the similarity-matching term of the predsim loss
DECODER_FEATURES = 2048  # LL: the auxiliary classifier sees at most this many (pooled) features


def similarity(x: Tensor) -> Tensor:
    """The cosine-similarity matrix (B, B) of a batch, each row centred first (Noekland &
    Eidnes 2019). Maps (B, C, H, W) with C > 3 and H > 1 are first reduced to the standard
    deviation of every channel over the positions; other maps are flattened."""
    if x.dim() == 4:
        x = x.flatten(2).std(2) if x.shape[1] > 3 and x.shape[2] > 1 else x.flatten(1)
    x = x.flatten(1)
    xc = x - x.mean(1, keepdim=True)
    xn = xc / (1e-8 + xc.square().sum(1, keepdim=True).sqrt())
    return (xn @ xn.T).clamp(-1, 1)


def decoder_grid(shape: tuple[int, ...], limit: int = DECODER_FEATURES) -> tuple[int, int] | None:
    """The average-pooled map size (h, w) that brings a (C, H, W) block output to at most
    ``limit`` features, halving the height and the width in turn (Noekland & Eidnes' rule for
    their ``dim_in_decoder``); None when no pooling is needed (or for dense outputs)."""
    if len(shape) != 3:
        return None
    c, h, w = shape
    kh = kw = 1
    oh, ow = h, w
    while c * oh * ow > limit and kh < h:
        kh *= 2
        oh = math.ceil(h / kh)
        if c * oh * ow > limit:
            kw *= 2
            ow = math.ceil(w / kw)
    return None if (oh, ow) == (h, w) else (oh, ow)


class PredSimHead(nn.Module):
    """The auxiliary parts of one LL block: a 3x3 conv (conv blocks) before the similarity
    matrix, and a linear classifier (zero-initialised weights, as Noekland & Eidnes) on the
    average-pooled output; with ``feedback`` its backward pass uses fixed random weights."""

    def __init__(
        self, shape: tuple[int, ...], classes: int, feedback: torch.Generator | None = None
    ) -> None:
        super().__init__()
        conv = len(shape) == 3
        self.sim_conv = (
            Conv2d(shape[0], shape[0], 3, padding=1, grad=True, init="fan_in") if conv else None
        )
        self.grid = decoder_grid(shape)
        features = shape[0] * math.prod(self.grid) if self.grid else math.prod(shape)
        self.decoder = Linear(features, classes, bias=True, grad=True, init="fan_in")
        with torch.no_grad():
            self.decoder.weight.zero_()
        self.fixed = [feedback_alignment(self.decoder, feedback)] if feedback is not None else []

    def classify(self, h: Tensor) -> Tensor:
        """The auxiliary classifier's logits (B, m)."""
        if self.grid is not None:
            h = F.adaptive_avg_pool2d(h, self.grid)
        return self.decoder(h.flatten(1))

    def similarity(self, h: Tensor) -> Tensor:
        """The block output's similarity matrix (B, B)."""
        return similarity(self.sim_conv(h) if self.sim_conv is not None else h)


class PredSim(LPred):
    """One LL block's rule: 0.99 MSE(S(h), S(y*)) + 0.01 CE(classifier(h), y) over the
    block's parameters and its head's, with their own Adam. The logits are the classifier's
    (the block's early exit)."""

    def __init__(
        self, params, head: PredSimHead, *, lr: float, beta: float = PREDSIM_BETA, name: str = ""
    ):
        super().__init__([*params, *head.parameters()], lr=lr, name=name)
        self.head, self.beta = head, beta

    def logits(self, h: Tensor, t: Tensor | None) -> Tensor:
        return self.head.classify(h)

    def loss(self, h: Tensor, t: Tensor | None, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.head.classify(h)
        onehot = F.one_hot(y, logits.shape[1]).to(h.dtype)
        sim = F.mse_loss(self.head.similarity(h), similarity(onehot))
        pred = F.cross_entropy(logits, y)
        return self.beta * sim + (1 - self.beta) * pred, logits

    def state_dict(self) -> dict:
        return {**super().state_dict(), "head": self.head.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.head.load_state_dict(state["head"])


class LocalLearning(Rules):
    """Local learning (Noekland & Eidnes 2019, predsim; ``train.rule = "ll-bp"``): every hidden
    layer is a block trained by :class:`PredSim` as soon as its output is formed, with its input
    detached; the classification layer by its own CE. Exits: every block's auxiliary
    classifier, then the network's output."""

    feedback = False  # the auxiliary classifiers send their error back through fixed weights

    def __init__(self, net, config) -> None:
        super().__init__()
        self.net, self.names, lr = net, tuple(net.names), config.train.lr
        gen = fixed_generator(config) if self.feedback else None
        device = net.layers[0].projection.weight.device
        self.heads = nn.ModuleList(
            PredSimHead(shape, net.classes, gen) for shape in net.shapes[:-1]
        ).to(device)
        for name, layer, head in zip(self.names, net.layers, self.heads, strict=False):
            self.rules[name] = PredSim(layer.parameters(), head, lr=lr, name=name)
            self.fixed.update({f"{name}.decoder": b for b in head.fixed})
        self.rules[self.names[-1]] = ClassifierCE(net.layers[-1].parameters(), lr=lr)

    def train_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        losses, wrong, h = [], [], x
        for layer, rule in zip(self.net.layers, self.rules.values(), strict=True):
            h, _ = layer(h.detach())
            loss, logits = rule.update(h, None, y)
            losses.append(loss)
            wrong.append((logits.argmax(1) != y).sum())
        return torch.stack(losses), torch.stack(wrong)

    def predict_exits(self, x: Tensor) -> Tensor:
        preds, h = [], x
        for layer, rule in zip(self.net.layers, self.rules.values(), strict=True):
            h, _ = layer(h)
            preds.append(rule.logits(h, None).argmax(1))
        return torch.stack(preds, 1)


class LocalLearningFA(LocalLearning):
    """``train.rule = "ll-fa"``: :class:`LocalLearning` whose auxiliary classifiers send their
    error back to h_i through fixed random weights
    (``ctsp.discrete.feedback.FeedbackAlignmentFunction``)."""

    feedback = True
