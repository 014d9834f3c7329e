"""A stand-in training job for lifecycle tests: train_grpo.py's step lines, a pause between them,
and, when asked, a crash with a chosen exit code. Runs on any python3 (standard library only)."""

import argparse
import os
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--config")  # fleet passes the config it synced; this job needs nothing from it
p.add_argument("--steps", type=int, default=100)
p.add_argument("--interval", type=float, default=0.2)
p.add_argument("--fail-at", type=int)
p.add_argument("--exit-code", type=int, default=3)
p.add_argument("--fail-on-node", type=int, help="under torchrun: the node of this rank dies before its first step")
args = p.parse_args()
if args.fail_on_node is not None and os.environ.get("GROUP_RANK") == str(args.fail_on_node):
    print(f"RuntimeError: node {args.fail_on_node} cannot start", file=sys.stderr, flush=True)
    sys.exit(args.exit_code)

for step in range(1, args.steps + 1):
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} INFO step={step}/{args.steps} loss={1 / step:.6g} reward={step / args.steps:.6g}", flush=True)
    if step == args.fail_at:
        print("Traceback (most recent call last):\nRuntimeError: injected failure", file=sys.stderr, flush=True)
        sys.exit(args.exit_code)
    time.sleep(args.interval)
print("done", flush=True)
