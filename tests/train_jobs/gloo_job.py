"""A stand-in multi-node job: torch.distributed over gloo (CPU), one all_reduce per step, so a dead
rank shows up at the others' next step as it would in training. Started by torchrun."""

import argparse
import os
import time

import torch
import torch.distributed as dist

p = argparse.ArgumentParser()
p.add_argument("--config")
p.add_argument("--steps", type=int, default=600)
p.add_argument("--interval", type=float, default=0.2)
args = p.parse_args()

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
for step in range(1, args.steps + 1):
    total = torch.ones(1)
    dist.all_reduce(total)
    if os.environ.get("LOCAL_RANK", "0") == "0":
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{stamp} INFO rank={rank} step={step}/{args.steps} loss={1 / step:.6g} reward={total.item() / world:.6g}",
            flush=True,
        )
    time.sleep(args.interval)
dist.destroy_process_group()
