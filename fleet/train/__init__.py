"""Training runs across the fleet: `fleet train` launches train_grpo.py (or any job a config names)
detached on every selected host, reports its state, follows its log and stops it.

config.py      the `job:` half of a training config file
jobs.py        one job on one host: shell scripts to launch/observe/stop it and their parsers (pure)
rendezvous.py  multi-node runs: torchrun rendezvous from the inventory; one dead node fails the run
plan.py        config + inventory + preflight -> what to do on each host (pure)
control.py     the four operations over the fleet's connections
cli.py         `fleet train [status|logs|stop]`
"""
