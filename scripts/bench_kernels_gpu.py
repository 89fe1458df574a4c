"""GPU check and benchmark of the fused norm kernels (Triton), prepared for a machine with CUDA.

    python scripts/bench_kernels_gpu.py            # correctness, kernels vs nn.BatchNorm2d, training steps
    python scripts/bench_kernels_gpu.py --smoke    # without a GPU: the correctness part on CPU tensors
                                                   # under Triton's interpreter, small shapes, no timing

1. Correctness: every kind and layout through the Triton kernels against the plain equations
   (``fused=False``) in float64, outputs and input/affine gradients.
2. ``benchmarks.norms --device cuda --modes fused``: fwd+bwd time and saved memory against
   nn.BatchNorm2d (targets: L1 ≤ 0.9×, L∞/top-k ≤ 1.1×).
3. ``benchmarks.norm_step --device cuda``: VGG11 and ResNet-20 training steps, each kind
   against L2 in the same layout (target ≤ 1.0×).
Meant to finish in under 5 minutes on one GPU (Triton compiles a few kernels on first use).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

SMOKE = "--smoke" in sys.argv
if SMOKE:
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported

import torch  # noqa: E402

from normmatters.norms import build_norm, kernels  # noqa: E402
from normmatters.norms.lp_ops import lp_batch_norm_train  # noqa: E402

SHAPES = ((6, 5, 7, 3), (32, 64, 8, 8)) if SMOKE else ((6, 5, 7, 3), (64, 64, 16, 16), (256, 256, 8, 8))


def check(device: str) -> None:
    if SMOKE:
        kernels.backend = lambda device_type: "triton"  # CPU tensors through the interpreted kernels
    assert kernels.backend(device) == "triton", f"the Triton kernels do not run on {device}"
    for shape in SHAPES:
        for layout in ("nchw", "channels_last"):
            for kind in ("l1", "linf", "topk", "mean"):
                torch.manual_seed(0)
                fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
                x = (torch.randn(shape) * 2 + 0.5).contiguous(memory_format=fmt)
                options = {"k": 5} if kind == "topk" else {}
                ref = build_norm(kind, shape[1], fused=False, dtype=torch.float64, **options)
                with torch.no_grad():
                    if ref.weight is not None:
                        ref.weight.uniform_(0.5, 1.5)
                    ref.bias.normal_()
                xr = x.double().requires_grad_()
                y_ref = ref(xr)
                dy = torch.randn_like(y_ref)
                grads_ref = torch.autograd.grad(y_ref, [xr] + list(ref.parameters()), dy)
                params = [p.detach().float().to(device).requires_grad_() for p in ref.parameters()]
                w, b = (params[0], params[1]) if ref.weight is not None else (None, params[0])
                xd = x.to(device).requires_grad_()
                constant = ref._constant(x.numel() // shape[1]) if kind != "mean" else 1.0
                y, _, _ = lp_batch_norm_train(xd, w, b, kind, ref.eps, constant, 5)
                grads = torch.autograd.grad(y, [xd] + params, dy.float().to(device))
                rel = lambda a, r: ((a.double().cpu() - r).abs().max() / (r.abs().max() + 1e-12)).item()  # noqa: E731
                errors = [rel(y.detach(), y_ref.detach())] + [rel(g, r) for g, r in zip(grads, grads_ref)]
                ok = max(errors) < 1e-4
                print(f"check {shape} {layout} {kind}: max error / max |reference| (y, dx, dparams) "
                      + " ".join(f"{e:.1e}" for e in errors) + ("" if ok else "  FAILED"), flush=True)
                assert ok


def main() -> int:
    if SMOKE:
        check("cpu")
        print("smoke run done (no timings without a GPU)")
        return 0
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --smoke to check the code path on CPU")
    check("cuda")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ sits beside the package
    from benchmarks import norm_step, norms

    norms.main(["--device", "cuda", "--modes", "fused", "--repeats", "30"])
    norm_step.main(["--device", "cuda", "--kinds", "l1", "linf", "topk", "mean", "--repeats", "20"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
