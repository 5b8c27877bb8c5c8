"""Check, in a few seconds, that the attention backend a GPU batch will use agrees with the PyTorch reference.

For every attention type, on CUDA in bf16 (the precision of ``trainer=gpu``), causal and bidirectional with a
key-padding mask, and grouped-query heads: ``attend`` forward and backward under the backend chosen by
``HEDGEHOG_ATTENTION_BACKEND`` (default ``auto``: the Triton kernels where they apply) against the same call on
the ``torch`` backend; and one ``recurrent_step`` (generation). Exit status 0 when everything runs and agrees, 1
otherwise (the batch scripts then run with ``HEDGEHOG_ATTENTION_BACKEND=torch``). Without CUDA it checks nothing
and exits 0::

    python experiments/preflight_kernels.py
"""

from __future__ import annotations

import sys
import time

import torch


def main() -> int:
    if not torch.cuda.is_available():
        print("preflight_kernels: no CUDA device, nothing to check")
        return 0
    from hedgehog.attention import ATTENTION_NAMES, attend, build_feature_map, recurrent_step
    from hedgehog.attention.backend import get_backend, use_backend

    backend = get_backend()
    device = torch.device("cuda")
    t0 = time.time()
    problems = []
    for name in ATTENTION_NAMES:
        for causal in (True, False):
            torch.manual_seed(0)
            b, hq, hk, n, d = 2, 4, 2, 200, 32
            q = torch.randn(b, hq, n, d, device=device, dtype=torch.bfloat16)
            k = torch.randn(b, hk, n, d, device=device, dtype=torch.bfloat16)
            v = torch.randn(b, hk, n, d, device=device, dtype=torch.bfloat16)
            mask = torch.ones(b, n, dtype=torch.bool, device=device)
            mask[1, -37:] = False
            fq = build_feature_map(name, hq, d)
            fk = build_feature_map(name, hk, d)
            if fq is not None:
                fq, fk = fq.to(device), fk.to(device)
            outs, grads = [], []
            for which in (backend, "torch"):
                qq, kk, vv = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
                try:
                    with use_backend(which):
                        y = attend(qq, kk, vv, feature_map_q=fq, feature_map_k=fk, causal=causal, key_padding_mask=mask)
                        y = y.float() * mask[:, None, :, None]
                        y.pow(2).sum().backward()
                    torch.cuda.synchronize()
                except Exception as error:  # noqa: BLE001 -- any failure means: do not use this backend
                    problems.append(f"{name} causal={causal} backend={which}: {type(error).__name__}: {error}"[:300])
                    break
                outs.append(y.detach())
                grads.append(torch.cat([t.grad.float().flatten() for t in (qq, kk, vv)]))
            if len(outs) == 2:
                err = (outs[0] - outs[1]).abs().max().item() / (outs[1].abs().max().item() + 1e-6)
                gerr = (grads[0] - grads[1]).abs().max().item() / (grads[1].abs().max().item() + 1e-6)
                status = "ok" if err < 5e-2 and gerr < 1e-1 and torch.isfinite(grads[0]).all() else "MISMATCH"
                print(f"preflight_kernels: {name:10s} causal={causal!s:5s} rel.err out {err:.1e} grad {gerr:.1e} {status}")
                if status != "ok":
                    problems.append(f"{name} causal={causal}: relative error out {err:.2e}, grad {gerr:.2e}")
        if name != "softmax":
            fq = build_feature_map(name, 4, 32).to(device)
            fk = build_feature_map(name, 2, 32).to(device)
            qf = fq(torch.randn(2, 4, 1, 32, device=device, dtype=torch.bfloat16), is_query=True)
            kf = fk(torch.randn(2, 2, 1, 32, device=device, dtype=torch.bfloat16))
            v1 = torch.randn(2, 2, 1, 32, device=device, dtype=torch.bfloat16)
            try:
                with torch.no_grad(), use_backend(backend):
                    a, _ = recurrent_step(qf, kf, v1, None)
                with torch.no_grad(), use_backend("torch"):
                    r, _ = recurrent_step(qf, kf, v1, None)
                err = (a.float() - r.float()).abs().max().item() / (r.float().abs().max().item() + 1e-6)
                if not err < 5e-2:
                    problems.append(f"{name} recurrent_step: relative error {err:.2e}")
            except Exception as error:  # noqa: BLE001
                problems.append(f"{name} recurrent_step backend={backend}: {type(error).__name__}: {error}"[:300])
    print(f"preflight_kernels: backend {backend!r}, {len(problems)} problem(s) in {time.time() - t0:.1f} s")
    for p in problems:
        print("  " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
