"""Stop training at the first non-finite loss or gradient, say where it came from, and keep checkpoints clean.

On a NaN/inf loss, ``NaNGuard`` runs the same batch again through ``training_step`` with a forward hook on
every submodule and reports the first module (in execution order) whose output holds a non-finite value,
e.g. ``model.blocks.1.attn (MultiHeadAttention)``. The loss and the gradients are checked together before the
optimizer step, so the bad step never updates the weights, with one host synchronisation per step (a fused
norm over every gradient, not one check per parameter: a check that waits for the GPU stops the host from
queueing the next work, so each one costs more than its own time); and every checkpoint is checked before it is
written, so ``last.ckpt`` always holds the last good state.

Under DDP every process takes part in the decision, so all of them stop together.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from hedgehog.utils.errors import NonFiniteLossError


def _non_finite(value: Any) -> bool:
    """True if ``value`` (a tensor, or a tuple/list/dict of them) holds a NaN or an inf."""
    if isinstance(value, Tensor):
        return value.is_floating_point() and not bool(torch.isfinite(value.detach()).all())
    if isinstance(value, (tuple, list)):
        return any(_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    return False


def first_non_finite_module(module: nn.Module, run: Any) -> str | None:
    """Call ``run()`` with forward hooks on every submodule of ``module``; return ``"name (Class)"`` of the
    first one whose output is not finite, or None if every output was finite."""
    found: list[str] = []
    names = {m: name for name, m in module.named_modules()}

    def hook(mod: nn.Module, _inputs: Any, output: Any) -> None:
        if not found and _non_finite(output):
            found.append(f"{names.get(mod) or type(mod).__name__} ({type(mod).__name__})")

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        with torch.no_grad():
            run()
    except Exception:  # the replay is best effort; the loss check already decided to stop
        pass
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None


class NaNGuard(L.Callback):
    """Raise ``NonFiniteLossError`` naming the step and the first non-finite layer when training diverges.

    Args:
        check_gradients: also stop on a non-finite gradient (skipped with fp16 loss scaling, which handles
            overflowing steps itself).
    """

    def __init__(self, check_gradients: bool = True) -> None:
        self.check_gradients = check_gradients
        self._batch: Any = None
        self._batch_idx = 0
        self._losses: list[Tensor] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._batch, self._batch_idx = batch, batch_idx

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        self._losses.append(loss.detach())  # checked with the gradients, before the optimizer step

    def _check_loss(self, trainer: L.Trainer, pl_module: L.LightningModule, loss_ok: bool) -> None:
        if self._any_rank(trainer, not loss_ok):
            bad = next((loss for loss in self._losses if _non_finite(loss)), None)
            layer = self._locate(pl_module) if bad is not None else None
            where = f"; first non-finite output: {layer}" if layer else ""
            raise NonFiniteLossError(
                f"non-finite loss ({self._value(bad) if bad is not None else 'on another process'}) at step "
                f"{trainer.global_step} (epoch {trainer.current_epoch}, batch {self._batch_idx}){where}. Training "
                f"stopped before this step changed the weights; the last good checkpoint is kept. Try a lower "
                f"regime.lr, gradient clipping (trainer.gradient_clip_val), fp32 (trainer.precision=32-true), or "
                f"trainer=debug to find the operation."
            )

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        losses, self._losses = self._losses, []
        check_grads = self.check_gradients and getattr(trainer.precision_plugin, "scaler", None) is None
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None] if check_grads else []
        # one host synchronisation for the whole check: the loss(es) and a fused norm of every gradient
        flags = []
        if losses:
            flags.append(torch.isfinite(torch.stack([loss.float().reshape(-1)[0] for loss in losses])).all())
        if grads:
            norms = torch._foreach_norm(grads)
            flags.append(torch.isfinite(torch.stack([n.float().to(norms[0].device) for n in norms])).all())
        if not flags:
            return
        ok = torch.stack([f.to(flags[0].device) for f in flags]).tolist()
        loss_ok = ok[0] if losses else True
        self._losses = losses
        self._check_loss(trainer, pl_module, loss_ok)
        self._losses = []
        grads_ok = ok[-1] if grads else True
        bad = None
        if not grads_ok:
            bad = next(
                (name for name, p in pl_module.named_parameters() if p.grad is not None and _non_finite(p.grad)), None
            )
        if self._any_rank(trainer, not grads_ok):
            raise NonFiniteLossError(
                f"non-finite gradient at step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
                f"{self._batch_idx})" + (f" in parameter {bad}" if bad else " on another process") + ". Training "
                f"stopped before the optimizer step; the last good checkpoint is kept. Try a lower regime.lr or "
                f"gradient clipping (trainer.gradient_clip_val)."
            )

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        bad = next((k for k, v in checkpoint.get("state_dict", {}).items() if _non_finite(v)), None)
        if bad is not None:
            raise NonFiniteLossError(
                f"refusing to save a checkpoint at step {trainer.global_step}: weight {bad} is not finite. The last "
                f"good checkpoint is kept."
            )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._batch = None

    @staticmethod
    def _any_rank(trainer: L.Trainer, flag: bool) -> bool:
        if trainer.world_size > 1:
            return bool(trainer.strategy.reduce_boolean_decision(bool(flag), all=False))
        return bool(flag)

    @staticmethod
    def _value(loss: Tensor) -> str:
        try:
            return str(float(loss.detach().float().reshape(-1)[0]))
        except Exception:
            return "nan"

    def _locate(self, pl_module: L.LightningModule) -> str | None:
        """Replay the batch through ``training_step`` (logging switched off) with forward hooks."""
        batch, batch_idx = self._batch, self._batch_idx
        if batch is None:
            return None

        def replay() -> None:
            # instance attributes shadow the methods for the replay only
            pl_module.log = lambda *args, **kwargs: None  # type: ignore[method-assign]
            pl_module.log_dict = lambda *args, **kwargs: None  # type: ignore[method-assign]
            try:
                pl_module.training_step(batch, batch_idx)
            finally:
                del pl_module.log, pl_module.log_dict

        return first_non_finite_module(pl_module, replay)
