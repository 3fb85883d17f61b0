#!/usr/bin/env python
"""One ViT-B/16 attention layer as the stages run it, per precision and token count. Prints figures.

Stage 1 reads every layer's attention probabilities, so it runs the explicit product
(``tagclip_cls.core.vit.attention``) where a plain forward would use fused attention. This times
that explicit layer beside the fused one (``fused=True``: ``scaled_dot_product_attention``) at
VOC's most common token count, 714 (a 23 x 31 grid and the class token), and at 720, the next
multiple of 8 (tensor-core kernels want aligned sizes), in fp32, tf32, and bf16 and fp16 autocast: is the
explicit path the reason a GPU ran stage 1 slower in bf16 than in fp32, and would padding the
tokens to a multiple of 8 help? Random weights; milliseconds per layer call and per image.

    python benchmarks/bench_attention.py [--device cuda] [--batch 32] [--tokens 714 720]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagclip_cls.core.vit import attention  # noqa: E402
from tagclip_cls.runtime.denormals import flush_denormals  # noqa: E402
from tagclip_cls.runtime.precision import precision_autocast  # noqa: E402

WIDTH, HEADS = 768, 12  # ViT-B/16


def time_layer(layer: nn.MultiheadAttention, x: torch.Tensor, precision: str, fused: bool,
               min_seconds: float) -> float:
    """Seconds per call of one attention layer (probabilities kept unless ``fused``)."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    with torch.inference_mode(), precision_autocast(precision, x.device.type):
        for _ in range(2):
            attention(layer, x, need_probs=not fused, fused=fused)
        sync()
        calls, start = 0, time.perf_counter()
        while calls < 3 or time.perf_counter() - start < min_seconds:
            attention(layer, x, need_probs=not fused, fused=fused)
            calls += 1
        sync()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32, help="images per call (default 32; try 2 on a CPU)")
    parser.add_argument("--tokens", type=int, nargs="+", default=[714, 720])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "tf32", "bf16", "fp16"])
    parser.add_argument("--seconds", type=float, default=1.0, help="time each case for at least this long")
    args = parser.parse_args()
    device = torch.device(args.device)
    layer = nn.MultiheadAttention(WIDTH, HEADS).to(device).eval()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}, batch {args.batch}, one ViT-B/16 attention layer")
    print("| tokens | precision | explicit (probabilities kept) ms | fused ms | explicit ms per image |")
    print("|---|---|---|---|---|")
    with flush_denormals(device.type == "cpu"):
        for tokens in args.tokens:
            x = torch.randn(args.batch, tokens, WIDTH, generator=torch.Generator().manual_seed(0)).to(device)
            for precision in args.precisions:
                explicit = time_layer(layer, x, precision, False, args.seconds)
                fused = time_layer(layer, x, precision, True, args.seconds)
                print(f"| {tokens} | {precision} | {1e3 * explicit:.2f} | {1e3 * fused:.2f} | "
                      f"{1e3 * explicit / args.batch:.3f} |", flush=True)


if __name__ == "__main__":
    main()
