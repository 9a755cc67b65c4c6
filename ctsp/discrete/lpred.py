"""Local losses with their own optimizer: L_pred (Eq. 9) and the classification layer's cross
entropy (Fig. 2b). Each rule owns one layer's Adam optimizer (and, for float16, a gradient
scaler): a layer updates from its own loss, no gradient crosses a layer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import DivergenceError
from ..nn import comparison


class LPred:
    """The prediction loss L_pred (Eq. 9) of one layer, with that layer's own optimizer (Adam).

    loss = CE(y*, O(h_i, t_i)): each output h_b is compared with the m class targets (Eq. 8, the
    layer's early-exit prediction) and the cross entropy pushes it towards its own class's
    target and away from the others. ``h``: (B, ...), ``t``: (m, ...) or (B, m, ...) (see
    :func:`o_dot`), ``y``: (B,) int64 labels. Sign: Eq. 9 writes CE(y*, -O_dot); here the
    comparison itself is the logit, so that the predicted class is the most similar target
    (argmax of Eq. 5/8), as in the paper's implementation; O_l2 is a negative distance.

    ``params`` are the layer's parameters (and, for the first layer, the target generator's):
    :meth:`update` back-propagates the loss into these only, since the layer's inputs arrive
    detached, and steps the optimizer, both outside any autocast (``train.precision``: the
    backward ops run in the types autocast gave their forward ops). With a ``scaler``
    (``torch.amp.GradScaler``, float16 autocast) the loss is scaled before the backward pass
    and the step is skipped when the scaled gradients overflow.
    """

    def __init__(
        self, params, *, compare: str = "dot", lr: float = 5e-4, scaler=None, name: str = ""
    ) -> None:
        self.name = name  # the layer's name, for messages
        self.compare = comparison(compare)
        self.params = [p for p in params if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=lr) if self.params else None
        self.scaler = scaler  # a torch.amp.GradScaler (float16 training) or None

    def logits(self, h: Tensor, t: Tensor | None) -> Tensor:
        """The layer's prediction logits (B, m): O(h, t), Eq. 8."""
        return self.compare(h, t)

    def loss(self, h: Tensor, t: Tensor | None, y: Tensor) -> tuple[Tensor, Tensor]:
        """(L, logits) for one minibatch."""
        logits = self.logits(h, t)
        return nn.functional.cross_entropy(logits, y), logits

    def update(self, h: Tensor, t: Tensor | None, y: Tensor) -> tuple[Tensor, Tensor]:
        """One optimizer step on this layer's loss; returns the (detached) loss and logits.

        Raises DivergenceError, before stepping, when the loss is NaN or Inf.
        """
        loss, logits = self.loss(h, t, y)
        if not bool(torch.isfinite(loss)):
            where = f"layer {self.name}" if self.name else "a layer"
            raise DivergenceError(f"training diverged: NaN or Inf in the loss of {where}")
        if self.optimizer is not None:
            with torch.autocast(loss.device.type, enabled=False):  # backward in forward's types
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler is None:
                    loss.backward()
                    self.optimizer.step()
                else:
                    self.scaler.scale(loss).backward()
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
        return loss.detach(), logits.detach()

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups if self.optimizer is not None else ():
            group["lr"] = lr

    def state_dict(self) -> dict:
        """The optimizer's state (and the gradient scaler's), by name."""
        state = {"optimizer": self.optimizer.state_dict() if self.optimizer is not None else {}}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


class ClassifierCE(LPred):
    """The classification layer's rule (Fig. 2b): cross entropy of its output with the labels.

    ``h`` (B, m) are the logits; targets are not used.
    """

    def __init__(self, params, *, lr: float = 5e-4, scaler=None, name: str = "out") -> None:
        super().__init__(params, lr=lr, scaler=scaler, name=name)

    def logits(self, h: Tensor, t: Tensor | None) -> Tensor:
        return h
