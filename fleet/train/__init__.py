"""Training runs across the fleet: `fleet train` launches train_grpo.py (or any job a config names)
detached on every selected host, reports its state, follows its log and stops it.

config.py         the `job:` half of a training config file
jobs.py           one job on one host: shell scripts to launch/observe/stop it and their parsers (pure);
                  the job's environment and command line, shared with the Slurm backend
rendezvous.py     multi-node runs: torchrun rendezvous from the inventory; one dead node fails the run
plan.py           config + inventory + what a host showed -> what to do there; the multi-node barrier (pure)
actions.py        launch, status and stop as actions of the playbook engine (probe, plan, apply)
control.py        the plays those actions run in (and the log poll)
slurm.py          the Slurm backend's batch script, scripts, parsers and planner (pure)
slurm_control.py  the same plays on a Slurm login host
view.py           what the results say: launch/stop messages, the status table, log lines
cli.py            `fleet train [status|logs|stop]`
"""
