"""The `job:` section of a training config file: where and how `fleet train` runs the job.

The same file's `train:` section belongs to the training script (model, data, rewards, GRPOConfig);
the file travels with the script, so both halves always agree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..model import FleetError
from ..resources import find
from ..task import describe_validation
from ..yamlfile import line_of, load_yaml

DEFAULT_CONFIG = "playbooks/files/train_config.yaml"  # ./ first, else the shipped one (resources.find)
# The setup guide's ceiling: "VRAM usage should not exceed 97871 MiB".
GPU_BUDGET_MIB = 97871
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class SlurmConfig(BaseModel):
    """`job.slurm`: how `fleet train --backend slurm` asks for nodes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    login: str | None = None  # inventory host that runs sbatch; default: the machine fleet runs on
    partition: str | None = None  # with no host pattern: any `nodes` nodes of this partition
    nodes: int = Field(1, ge=1)
    time: str | None = None  # sbatch --time


class JobConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run_name: str = "grpo_gptoss20b_lora4_tes"
    workdir: str = "~/tes_grpo_trl"  # per host: `train_workdir`
    python: str = ".venv/bin/python"  # relative to workdir; per host: `train_python`
    script: str = "train_grpo.py"  # a local file, relative to the config file; synced into workdir
    args: list[str] = Field(default_factory=list)  # after `--config <this file>`
    files: list[str] = Field(default_factory=list)  # more local files synced into workdir
    env: dict[str, str] = Field(default_factory=dict)
    launcher: Literal["auto", "python", "torchrun"] = "auto"  # auto: torchrun when multi-node or >1 GPU
    multi_node: bool = False  # all selected hosts form one run (rendezvous from the inventory)
    nproc_per_node: int = Field(1, ge=1)  # per host: `nproc_per_node`
    master_port: int = Field(29500, ge=1, le=65535)
    gpu_memory_budget_mib: int = Field(GPU_BUDGET_MIB, ge=1)  # per host: `gpu_memory_budget_mib`
    warn_at: float = Field(0.9, gt=0, le=1)  # of the budget
    require_gpu: bool = True
    min_free_gpu_mib: int = Field(1024, ge=0)
    require_stack: bool = False  # refuse hosts where the setup playbook recorded no stack
    require_modules: list[str] = Field(default_factory=lambda: ["torch", "transformers", "trl", "peft"])
    stop_timeout: int = Field(30, ge=1, le=3600)  # seconds between TERM and KILL
    # Seconds a launch watches the job (until its first step record or its exit): a job that dies
    # in this window is reported failed with its log's last lines, not as started. 0: no watch.
    launch_wait: int = Field(60, ge=0, le=3600)
    backend: Literal["ssh", "slurm"] = "ssh"  # ssh: detached jobs on the hosts; slurm: sbatch
    slurm: SlurmConfig = Field(default_factory=SlurmConfig)


@dataclass(frozen=True)
class TrainConfig:
    path: Path
    content: bytes
    job: JobConfig
    train: Mapping[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> str:
        """What the script trains: the tiny random gpt-oss for a smoke run, else `train.model`."""
        smoke = bool(self.train.get("smoke")) or "--smoke" in self.job.args
        return "smoke (tiny random gpt-oss)" if smoke else str(self.train.get("model") or "openai/gpt-oss-20b")

    @property
    def runs_train_grpo(self) -> bool:
        """The job is fleet's training script, which can say what attention it will use."""
        return Path(self.job.script).name == "train_grpo.py"

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def local_file(self, name: str) -> Path:
        path = Path(name).expanduser()
        return path if path.is_absolute() else self.base_dir / path


def load_config(path: str | Path | None, *, run_name: str | None = None) -> TrainConfig:
    """Read and check a config file; bad values become one line naming file:line."""
    path = Path(path) if path else find(DEFAULT_CONFIG)
    data = load_yaml(path) or {}
    if not isinstance(data, Mapping):
        raise FleetError(f"{path}: a training config is a mapping with `job:` and `train:` sections")
    raw = data.get("job") or {}
    if not isinstance(raw, Mapping):
        raise FleetError(f"{path}:{line_of(raw) or 1}: `job:` must be a mapping")
    try:
        job = JobConfig.model_validate(dict(raw))
    except ValidationError as exc:
        raise FleetError(f"{path}:{line_of(raw) or 1}: job: {describe_validation(exc)}") from None
    if run_name:
        job = job.model_copy(update={"run_name": run_name})
    if not RUN_NAME.match(job.run_name):
        raise FleetError(f"{path}: run name {job.run_name!r} must be letters, digits, '.', '_' or '-'")
    train = data.get("train") or {}
    if not isinstance(train, Mapping):
        raise FleetError(f"{path}:{line_of(train) or 1}: `train:` must be a mapping")
    config = TrainConfig(path, path.read_bytes(), job, dict(train))
    for name in [job.script, *job.files]:
        if not config.local_file(name).is_file():
            raise FleetError(f"{path}: job file {name!r} not found (looked at {config.local_file(name)})")
    return config


def host_setting(hostvars: Mapping[str, Any], name: str, default: Any) -> Any:
    """A per-host override (`train_python`, `gpu_memory_budget_mib`, ...) or the config's value."""
    value = hostvars.get(name)
    return default if value is None or value == "" else value
