"""Time CS-CFG's three predictions per step as separate passes against one batch, in one process.

    python benchmarks/guidance_batching.py                       # the tiny random model, CPU
    python benchmarks/guidance_batching.py --model /models/Wan2.1-VACE-1.3B-diffusers --device cuda \
        --size 832x480 --frames 81 --steps 4

Prints seconds per call for each mode, their ratio, and the largest difference between the
two outputs (it should be float rounding only). Peak GPU memory is printed on CUDA.
"""

import argparse
import tempfile
import time

import numpy as np
import torch

from pickstyle.pipeline.pipeline import load_pipeline
from pickstyle.testing import save_tiny_model
from pickstyle.video.frames import parse_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="diffusers Wan2.1-VACE folder (default: the tiny random model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="fp32")
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = args.model or save_tiny_model(tempfile.mkdtemp() + "/tiny")
    pipe = load_pipeline(str(model), {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    height, width = parse_size(args.size)
    video = (np.random.default_rng(0).random((args.frames, height, width, 3)) * 255).astype(np.uint8)

    def run(batched: bool):
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = pipe(video=video, prompt="anime style. noise", height=height, width=width, num_inference_steps=args.steps,
                   skip_steps=0, batch_guidance=batched, generator=torch.Generator().manual_seed(0)).frames[0]  # fmt: skip
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
        return time.perf_counter() - start, peak, out

    run(False)  # warm-up
    times, outputs = {False: [], True: []}, {}
    for _ in range(args.repeats):
        for batched in (False, True):
            seconds, peak, out = run(batched)
            times[batched].append(seconds)
            outputs[batched] = (out, peak)
    separate, batched = np.median(times[False]), np.median(times[True])
    diff = np.abs(outputs[False][0] - outputs[True][0]).max()
    print(f"model {model}, {args.frames} frames at {width}x{height}, {args.steps} steps, {args.device} {args.dtype}")
    print(f"separate passes: {separate:.3f} s/call (peak {outputs[False][1]:.2f} GiB)")
    print(f"one batch:       {batched:.3f} s/call (peak {outputs[True][1]:.2f} GiB)")
    print(f"ratio batched / separate: {batched / separate:.2f}; largest output difference {diff:.2e}")


if __name__ == "__main__":
    main()
