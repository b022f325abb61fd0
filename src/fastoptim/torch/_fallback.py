"""torch.optim's own implementation of an optimizer, for the params fastoptim's
kernels cannot step (see fastoptim.torch.optimizer's routes).

A TorchTwin holds one instance of the torch.optim class of the same name and,
for one call, points it at our optimizer's state, defaults and the groups (with
only the params on torch's path), then runs the class's step: its lazy state
initialization, its single-tensor, foreach or fused implementation as the
group's flags choose, sparse grads, differentiable=True, everything torch does.
State is shared, in torch's layout, so a param can move between the two paths.

Only the step itself runs, not torch's step hooks: those belong to our
optimizer, whose own step() already ran them once.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


class TorchTwin:
    """torch.optim.<name>, stepping given groups over a given state."""

    def __init__(self, torch_name: str) -> None:
        cls = getattr(torch.optim, torch_name)
        # Any valid construction will do: groups, state and defaults are ours at each call.
        self.optimizer = cls([torch.zeros(2, 2, requires_grad=True)])
        self.optimizer.param_groups = []
        step = cls.step
        # torch wraps each class's step once with its hook runner (Optimizer.profile_hook_step);
        # beneath it is the step proper.
        # (optimizer) or, for a closure-driven rule, (optimizer, closure)
        self._step: Callable[..., Any] = step.__wrapped__ if getattr(step, "hooked", False) else step

    def step(self, owner: torch.optim.Optimizer, groups: Sequence[tuple[dict[str, Any], list[torch.Tensor]]],
             grad_scale: torch.Tensor | float | None = None, found_inf: torch.Tensor | None = None) -> None:
        """One step of `groups` ([(our group, its params on torch's path)]) over owner's state.

        grad_scale, found_inf: as torch.amp.GradScaler sets them on a fused optimizer;
        fused groups get them as torch's fused kernels take them, the others see grads
        divided by grad_scale (temporary tensors, the grads themselves untouched) and
        skip the step when found_inf is set.
        """
        optimizer = self.optimizer
        fused = [dict(group, params=params) for group, params in groups if group.get("fused")]
        plain = [dict(group, params=params) for group, params in groups if not group.get("fused")]
        skip = found_inf is not None and float(found_inf) != 0
        optimizer.state, optimizer.defaults = owner.state, owner.defaults
        try:
            if fused:
                optimizer.param_groups = fused
                optimizer.grad_scale, optimizer.found_inf = grad_scale, found_inf
                self._step(optimizer)
            optimizer.grad_scale = optimizer.found_inf = None
            if plain and not skip:
                optimizer.param_groups = plain
                if grad_scale is None:
                    self._step(optimizer)
                else:
                    self._step_unscaled(plain, grad_scale)
        finally:
            optimizer.param_groups = []
            optimizer.state, optimizer.defaults = {}, {}
            optimizer.grad_scale = optimizer.found_inf = None

    def closure_step(self, owner: torch.optim.Optimizer, closure: Callable[[], Any]) -> Any:
        """One step of a closure-driven optimizer (LBFGS) over all of owner's groups and state;
        torch's step calls closure as often as it needs.  Returns what torch's step returns."""
        optimizer = self.optimizer
        optimizer.state, optimizer.defaults = owner.state, owner.defaults
        optimizer.param_groups = owner.param_groups
        # torch's LBFGS keeps its params (one group) and their count from construction
        lbfgs_cache = {"_params": owner.param_groups[0]["params"], "_numel_cache": None}
        optimizer.__dict__.update(lbfgs_cache)
        try:
            return self._step(optimizer, closure)
        finally:
            optimizer.param_groups = []
            optimizer.__dict__.update(dict.fromkeys(lbfgs_cache))
            optimizer.state, optimizer.defaults = {}, {}

    def _step_unscaled(self, groups: list[dict[str, Any]], grad_scale: torch.Tensor | float) -> None:
        originals = [(p, p.grad) for group in groups for p in group["params"] if p.grad is not None]
        try:
            for p, grad in originals:
                p.grad = grad / grad_scale
            self._step(self.optimizer)
        finally:
            for p, grad in originals:
                p.grad = grad
