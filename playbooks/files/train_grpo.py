"""GRPO on gpt-oss with a rank-4 LoRA adapter (TRL GRPOTrainer + PEFT).

    python train_grpo.py [--config train_config.yaml] [--smoke] [--run-name NAME] [--max-steps N] [--resume]

Everything about the run comes from the config file's `train:` section (model, data, rewards,
LoRA, GRPOConfig values); `fleet train` reads the same file's `job:` section. The attention
implementation is chosen per model (see `attention_candidates`): gpt-oss trains with eager
attention; other models take ATTN_IMPL or the chain flash_attention_3 -> flash_attention_2 ->
sdpa -> eager (the first one that loads, each refusal logged). vLLM generates when it is
importable and a GPU is there.

gpt-oss is loaded the way transformers supports training it: its MXFP4 expert weights
dequantized to bf16 (`Mxfp4Config(dequantize=True)`), `use_cache=False`, eager attention.

`--smoke` builds a tiny random gpt-oss and a word-level tokenizer (nothing is downloaded), saves
the model as a checkpoint and loads it back through the same loading code as the real model, then
trains a few GRPO steps: the whole path, provable on any GPU and on a CPU.

`--resume` continues from the newest `checkpoint-N` in runs/<run name>/ (Trainer's
resume_from_checkpoint: weights, optimizer, scheduler, RNG and step); without one it fails.

Every logged step becomes one line `step=N/M loss=… reward=… …` in runs/<run name>/training.log,
which `fleet train status` reads.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import math
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

DEFAULT_RUN_NAME = "grpo_gptoss20b_lora4_tes"
DEFAULT_MODEL = "openai/gpt-oss-20b"
ATTN_CHAIN = ("flash_attention_3", "flash_attention_2", "sdpa", "eager")
# The metrics worth a place in the one-line step record, in this order.
STEP_KEYS = ("loss", "reward", "reward_std", "kl", "entropy", "grad_norm", "learning_rate", "completions/mean_length")

log = logging.getLogger("train_grpo")


# ---- configuration ------------------------------------------------------------------------------
def load_config(path: str | None) -> dict[str, Any]:
    """The `train:` section of the config file (or the whole file when it has none)."""
    if path is None:
        default = Path("train_config.yaml")
        if not default.exists():
            return {}
        path = str(default)
    import yaml

    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: the config must be a mapping")
    section = data.get("train", data if "job" not in data else {})
    if not isinstance(section, dict):
        raise SystemExit(f"{path}: `train:` must be a mapping")
    return section


def setup_logging(run_dir: Path) -> None:
    """Log to stderr and to runs/<run>/training.log, once: when stderr already is that file
    (`fleet train` sends the job's output there), a second handler would double every line."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_file = run_dir / "training.log"
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if not _stderr_is(log_file):
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(fmt)
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)


def _stderr_is(path: Path) -> bool:
    try:
        a, b = os.fstat(sys.stderr.fileno()), os.stat(path)
    except (OSError, ValueError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def is_main_local_process() -> bool:
    return os.environ.get("LOCAL_RANK", "0") == "0"


# ---- attention implementation -------------------------------------------------------------------
# Models whose attention has learnable sinks (a per-head logit that joins the softmax):
# gpt-oss. Which implementations compute them correctly, forward AND backward, in the
# transformers versions this script runs on (4.56-4.57, the setup guide's lock, and 5.x):
#  - sdpa: refused by the model itself, `GptOssPreTrainedModel._supports_sdpa = False`
#    (models/gpt_oss/modeling_gpt_oss.py): torch's SDPA has no sink term.
#  - flash_attention_2 / flash_attention_3 (the flash_attn / flash_attn_interface packages):
#    `_process_flash_attention_kwargs` (modeling_flash_attention_utils.py) passes the sinks as
#    `s_aux` only when the kernel's signature has `s_aux` (4.57: "Only within kernel
#    implementation atm"; 5.x also `learnable_sink`); these kernels have neither, so the sinks
#    are dropped without a word and the attention is silently wrong.
#  - the kernels-hub FA3 that takes `s_aux` (kernels-community/vllm-flash-attn3) is vLLM's
#    inference kernel: forward only, no gradient for the sinks (Unsloth's gpt-oss training notes
#    report the same) - fine to generate with, wrong to train with.
#  - eager: `eager_attention_forward` concatenates the sinks to the logits in plain torch, so
#    autograd differentiates them; the published gpt-oss fine-tuning recipes use it.
# Hence: eager for sink models, whatever is asked; FA3 -> FA2 -> sdpa -> eager for the rest.
SINK_MODELS = {"gpt_oss": "attention sinks: only eager computes them in forward and backward"}


def attention_candidates(requested: str | None, model_type: str | None = None) -> list[str]:
    """The implementations to try, in order: for a model with attention sinks only eager (a
    request for another one is logged as refused); else the chain from the requested one down."""
    if model_type in SINK_MODELS:
        if requested and requested.strip() != "eager":
            log.warning("attention: %s refused for %s (%s)", requested.strip(), model_type, SINK_MODELS[model_type])
        return ["eager"]
    requested = (requested or ATTN_CHAIN[0]).strip()
    if requested in ATTN_CHAIN:
        return list(ATTN_CHAIN[ATTN_CHAIN.index(requested) :])
    return [requested, *ATTN_CHAIN[2:]]  # e.g. a kernels-hub name: try it, then the built-ins


def attention_refusal(impl: str, model_class: Any) -> str | None:
    """Why `impl` cannot work here, known before loading anything; None if it may."""
    import torch

    if impl.startswith("flash_attention"):
        if not torch.cuda.is_available():
            return "no CUDA device"
        if not getattr(model_class, "_supports_flash_attn", True):
            return f"{model_class.__name__} does not support FlashAttention"
        if impl == "flash_attention_3":
            if torch.cuda.get_device_capability(0)[0] < 9:
                return "FlashAttention-3 needs a Hopper GPU (compute capability 9.0)"
            if not any(importlib.util.find_spec(m) for m in ("flash_attn_3", "flash_attn_interface")):
                return "flash_attn_3 is not installed"
        if impl == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            return "flash_attn (FlashAttention-2) is not installed"
    if impl == "sdpa" and not getattr(model_class, "_supports_sdpa", True):
        return f"{model_class.__name__} does not support sdpa"
    return None


def load_with_attention(candidates: list[str], model_class: Any, load: Any) -> tuple[Any, str]:
    """load(impl) with the first implementation that is available and actually loads."""
    reasons = []
    for impl in candidates:
        refusal = attention_refusal(impl, model_class)
        if refusal is None:
            try:
                model = load(impl)
            except (ImportError, ValueError, RuntimeError) as exc:
                refusal = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            else:
                why = f" ({'; '.join(reasons)})" if reasons else ""
                log.info("attention: %s%s", impl, why)
                return model, impl
        reasons.append(f"{impl}: {refusal}")
        log.warning("attention: %s unavailable: %s", impl, refusal)
    raise SystemExit(f"no attention implementation could load the model: {'; '.join(reasons)}")


def which_attention(cfg: dict[str, Any], smoke: bool) -> str:
    """`attention: <impl> (<why>)`: what this host's training would use for the configured model,
    decided by the rule above (attention_candidates, attention_refusal) without loading weights.
    `fleet facts` and the `fleet train` recap print it; a load that fails at run time still falls
    back down the chain, and the run's log says so."""
    requested = os.environ.get("ATTN_IMPL") or cfg.get("attn_impl")
    try:
        if smoke:
            from transformers import GptOssConfig

            model_config: Any = GptOssConfig()  # what smoke_checkpoint builds
        else:
            from transformers import AutoConfig

            model_config = AutoConfig.from_pretrained(cfg.get("model", DEFAULT_MODEL))
    except Exception as exc:  # not cached and no hub, a model transformers does not know, ...
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return f"attention: unknown (cannot read the model's config: {why})"
    model_type = model_config.model_type
    reasons = [f"{model_type} {SINK_MODELS[model_type]}"] if model_type in SINK_MODELS else []
    for impl in attention_candidates(requested, model_type):
        refusal = attention_refusal(impl, _model_class(model_config))
        if refusal is None:
            return f"attention: {impl}" + (f" ({'; '.join(reasons)})" if reasons else "")
        reasons.append(f"{impl}: {refusal}")
    return f"attention: none ({'; '.join(reasons)})"


# ---- model, tokenizer, data -----------------------------------------------------------------------
SMOKE_WORDS = [
    "yes",
    "no",
    "maybe",
    "the",
    "a",
    "GPU",
    "trains",
    "fast",
    "slow",
    "model",
    "reward",
    "good",
    "bad",
    "answer",
    "question",
    "is",
    "what",
    "why",
    "how",
    "grace",
    "hopper",
    "node",
    "fleet",
    "loss",
    "step",
    "token",
]


def smoke_tokenizer() -> Any:
    """A word-level tokenizer built in memory from a fixed word list: no hub, no files."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<unk>"]
    vocab = {word: i for i, word in enumerate([*specials, *SMOKE_WORDS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
        model_input_names=["input_ids", "attention_mask"],  # no token_type_ids: gpt-oss takes none
    )


def smoke_checkpoint(tokenizer: Any, directory: Path) -> str:
    """A two-layer gpt-oss with four experts and random weights (a few hundred kB), saved as a
    checkpoint laid out like openai/gpt-oss-20b's: expert weights in MXFP4 (uint8 `*_blocks`, two
    e2m1 values a byte, 32-value groups sharing a `*_scales` exponent) and the same
    `quantization_config`, so that `load_model` takes the real model's path (dequantize to bf16)."""
    import json

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import GptOssConfig, GptOssForCausalLM

    config = GptOssConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_local_experts=4,
        num_experts_per_tok=2,
        sliding_window=16,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    GptOssForCausalLM(config).save_pretrained(directory)
    weights = load_file(directory / "model.safetensors")
    experts, hidden, inter = config.num_local_experts, config.hidden_size, config.intermediate_size
    random = torch.Generator().manual_seed(0)
    for layer in range(config.num_hidden_layers):
        prefix = f"model.layers.{layer}.mlp.experts."
        for name, rows, cols in (("gate_up_proj", 2 * inter, hidden), ("down_proj", hidden, inter)):
            del weights[prefix + name]
            blocks = torch.randint(0, 256, (experts, rows, cols // 32, 16), dtype=torch.uint8, generator=random)
            weights[prefix + name + "_blocks"] = blocks
            weights[prefix + name + "_scales"] = torch.full((experts, rows, cols // 32), 124, dtype=torch.uint8)
    save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})
    meta = json.loads((directory / "config.json").read_text())
    meta["quantization_config"] = {
        "quant_method": "mxfp4",
        "modules_to_not_convert": [
            "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head",
        ],
    }  # fmt: skip
    (directory / "config.json").write_text(json.dumps(meta, indent=2))
    return str(directory)


def load_options(model_config: Any, dtype: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """from_pretrained's options for training. MXFP4 checkpoints (gpt-oss ships its experts so)
    are dequantized to bf16 on load: transformers' MXFP4 kernels are inference-only, and
    `Mxfp4Config(dequantize=True)` is what its gpt-oss fine-tuning guide and the published
    recipes load with. `use_cache=False`: no KV cache while training (gradient checkpointing
    refuses it, and it only costs memory); generation turns it on for itself."""
    options: dict[str, Any] = {"dtype": dtype, "use_cache": False}
    quant = getattr(model_config, "quantization_config", None)
    method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
    if str(method).lower().endswith("mxfp4"):
        from transformers import Mxfp4Config

        options["quantization_config"] = Mxfp4Config(dequantize=True)
    options.update(extra)  # the config's model_kwargs (device_map, ...) have the last word
    return options


def describe_options(options: dict[str, Any]) -> str:
    quant = options.get("quantization_config")
    dequant = f"{type(quant).__name__}(dequantize={getattr(quant, 'dequantize', None)})" if quant else "none"
    return f"dtype {str(options['dtype']).removeprefix('torch.')}, quantization {dequant}, use_cache {options['use_cache']}"


def build_model(cfg: dict[str, Any], smoke: bool, scratch: Path) -> tuple[Any, Any, str]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    requested = os.environ.get("ATTN_IMPL") or cfg.get("attn_impl")
    if smoke:
        tokenizer = smoke_tokenizer()
        name = smoke_checkpoint(tokenizer, scratch / f"smoke-model.rank{os.environ.get('RANK', '0')}")
    else:
        name = cfg.get("model", DEFAULT_MODEL)
        tokenizer = AutoTokenizer.from_pretrained(name)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    model_config = AutoConfig.from_pretrained(name)
    # bf16 as the real run; a smoke run on a CPU computes in float32 (bf16 matmuls are slow there)
    default = "float32" if smoke and not torch.cuda.is_available() else "bfloat16"
    dtype = getattr(torch, str(cfg.get("dtype", default)))
    options = load_options(model_config, dtype, dict(cfg.get("model_kwargs") or {}))
    model_class = _model_class(model_config)
    log.info("model %s (%s): %s", "smoke" if smoke else name, model_config.model_type, describe_options(options))

    def load(impl: str) -> Any:
        return AutoModelForCausalLM.from_pretrained(name, attn_implementation=impl, **options)

    model, impl = load_with_attention(attention_candidates(requested, model_config.model_type), model_class, load)
    return model, tokenizer, impl


def _model_class(model_config: Any) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM._model_mapping[type(model_config)]


def build_dataset(cfg: dict[str, Any], smoke: bool) -> Any:
    """`data.prompts` (inline), or `data.dataset` (+ split, prompt_column) through `datasets`."""
    from datasets import Dataset, load_dataset

    data = cfg.get("data") or {}
    if smoke and not data.get("prompts"):
        data = {"prompts": ["what is the answer", "is the GPU fast", "why is the loss good", "how does the node train"]}
    if data.get("prompts"):
        return Dataset.from_dict({"prompt": [str(p) for p in data["prompts"]]})
    if not data.get("dataset"):
        raise SystemExit("config: give data.prompts or data.dataset")
    dataset = load_dataset(data["dataset"], data.get("subset"), split=data.get("split", "train"))
    column = data.get("prompt_column", "prompt")
    if column != "prompt":
        dataset = dataset.rename_column(column, "prompt")
    return dataset


# ---- rewards ---------------------------------------------------------------------------------------
def _text(completion: Any) -> str:
    if isinstance(completion, list):  # conversational: a list of messages
        return " ".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


def make_reward(spec: dict[str, Any]) -> Any:
    """One reward function from its spec: kind regex | contains | length | python (module:function)."""
    kind = spec.get("kind", "python" if "function" in spec else None)
    if kind == "regex":
        pattern = re.compile(spec["pattern"], re.S)

        def reward(completions: list[Any], **_: Any) -> list[float]:
            return [1.0 if pattern.search(_text(c)) else 0.0 for c in completions]

    elif kind == "contains":
        words = [str(w).lower() for w in spec["words"]]

        def reward(completions: list[Any], **_: Any) -> list[float]:
            return [sum(w in _text(c).lower().split() for w in words) / len(words) for c in completions]

    elif kind == "length":
        target = int(spec["target"])

        def reward(completions: list[Any], **_: Any) -> list[float]:
            return [-abs(len(_text(c).split()) - target) / target for c in completions]

    elif kind == "python":
        module, _, name = str(spec["function"]).partition(":")
        reward = getattr(importlib.import_module(module), name)
    else:
        raise SystemExit(f"config: unknown reward kind {kind!r} (regex, contains, length, python)")
    reward.__name__ = str(spec.get("name", kind))
    return reward


def build_rewards(cfg: dict[str, Any], smoke: bool) -> list[Any]:
    specs = cfg.get("rewards") or (
        [{"kind": "contains", "words": ["yes", "good"], "name": "says_yes"}] if smoke else []
    )
    if not specs:
        raise SystemExit("config: give at least one entry under rewards")
    return [make_reward(s) for s in specs]


# ---- GRPO ------------------------------------------------------------------------------------------
def grpo_config(cfg: dict[str, Any], run_name: str, run_dir: Path, smoke: bool, max_steps: int | None) -> Any:
    """GRPOConfig from the config's `grpo:` values. Keys this TRL version lacks are dropped with a
    warning, so one config serves TRL 0.23 (the guide's pin) and newer releases."""
    import dataclasses

    import torch
    from trl import GRPOConfig

    on_gpu = torch.cuda.is_available()
    values: dict[str, Any] = {
        "output_dir": str(run_dir),
        "run_name": run_name,
        "logging_steps": 1,
        "report_to": "none",
        "save_strategy": "no",
        "bf16": on_gpu and torch.cuda.is_bf16_supported(),
        "use_cpu": not on_gpu,
    }
    if smoke:
        values.update(
            per_device_train_batch_size=2, num_generations=2, max_completion_length=8, max_steps=4,
            learning_rate=1e-3, beta=0.0, temperature=1.0, seed=0, dataloader_num_workers=0,
        )  # fmt: skip
    if int(os.environ.get("NNODES", "1")) > 1:
        # Nodes share no disk: each saves its own checkpoints, so each can resume from them.
        values["save_on_each_node"] = True
    values.update(cfg.get("grpo") or {})
    if max_steps is not None:
        values["max_steps"] = max_steps
    use_vllm = values.get("use_vllm", "auto")
    if use_vllm == "auto":
        # vLLM needs a model path to load (the smoke model lives only in memory) and a GPU.
        use_vllm = not smoke and on_gpu and importlib.util.find_spec("vllm") is not None
        values["use_vllm"] = use_vllm
    if use_vllm:
        values.setdefault("vllm_mode", "colocate")
    log.info("vLLM generation: %s", f"on ({values['vllm_mode']})" if use_vllm else "off")
    known = {f.name for f in dataclasses.fields(GRPOConfig)}
    dropped = sorted(set(values) - known)
    if dropped:
        log.warning("GRPOConfig of this TRL has no %s: ignored", ", ".join(dropped))
    return GRPOConfig(**{k: v for k, v in values.items() if k in known})


def lora_config(cfg: dict[str, Any]) -> Any:
    from peft import LoraConfig

    lora = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    lora.update(cfg.get("lora") or {})
    return LoraConfig(task_type="CAUSAL_LM", **lora)


def apply_gpu_budget() -> None:
    """Cap PyTorch's allocator at the fleet's GPU memory budget (FLEET_GPU_BUDGET_MIB)."""
    import torch

    budget = os.environ.get("FLEET_GPU_BUDGET_MIB")
    if not budget or not torch.cuda.is_available():
        return
    device = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()  # this rank's GPU
    total_mib = torch.cuda.get_device_properties(device).total_memory / 2**20
    fraction = min(1.0, int(budget) / total_mib)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    log.info("GPU memory budget %s MiB of %.0f MiB (fraction %.3f)", budget, total_mib, fraction)


def step_line(step: int, max_steps: int, logs: dict[str, Any]) -> str:
    """The one-line record of a logged step that `fleet train status` parses."""
    parts = [f"step={step}/{max_steps}"]
    for key in STEP_KEYS:
        value = logs.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            parts.append(f"{key}={value:.6g}" if math.isfinite(value) else f"{key}=nan")
    return " ".join(parts)


def step_logger() -> Any:
    from transformers import TrainerCallback

    class StepLogger(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any) -> None:
            if logs and state.is_local_process_zero and any(k in logs for k in ("loss", "reward")):
                log.info("%s", step_line(state.global_step, state.max_steps, logs))

    return StepLogger()


def newest_checkpoint(run_dir: Path) -> str | None:
    """The newest whole checkpoint-N: the Trainer writes trainer_state.json last, so a job stopped
    while saving leaves a newer one without it, which cannot resume (transformers'
    get_last_checkpoint would pick it). fleet's checkpoint probe counts the same ones."""
    whole = [
        d for d in (run_dir.glob("checkpoint-*") if run_dir.is_dir() else ())
        if d.name.partition("-")[2].isdigit() and (d / "trainer_state.json").is_file()
    ]  # fmt: skip
    return str(max(whole, key=lambda d: int(d.name.partition("-")[2]))) if whole else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="YAML file; its `train:` section configures the run (default ./train_config.yaml)")
    p.add_argument("--smoke", action="store_true", help="tiny random gpt-oss built in memory, a few steps")
    p.add_argument("--run-name", help=f"runs/<run name>/ holds log and outputs (default {DEFAULT_RUN_NAME})")
    p.add_argument("--max-steps", type=int, help="override GRPOConfig.max_steps")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint-N of the run")
    p.add_argument(
        "--which-attention", action="store_true", help="print the attention implementation this host would train "
        "the configured model with, and why; load nothing, train nothing"
    )  # fmt: skip
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config)
    smoke = args.smoke or bool(cfg.get("smoke"))
    if smoke:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the smoke run must never reach a hub
    if args.which_attention:
        logging.basicConfig(level=logging.ERROR)  # the refusal warnings are in the answer's reasons
        print(which_attention(cfg, smoke))
        return 0
    # The libraries' notes about their own renamed internals are not actionable in a run's log,
    # and progress bars in a log file are noise: the step lines say it all.
    warnings.filterwarnings("ignore", category=FutureWarning)
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")
    run_name = args.run_name or os.environ.get("FLEET_RUN") or cfg.get("run_name") or DEFAULT_RUN_NAME
    run_dir = Path(cfg.get("runs_dir", "runs")) / run_name
    setup_logging(run_dir)
    started = time.monotonic()

    import torch
    import transformers
    import trl
    from trl import GRPOTrainer

    log.info(
        "run %s: %s, torch %s, transformers %s, trl %s, device %s, rank %s/%s",
        run_name, "smoke (tiny random gpt-oss)" if smoke else cfg.get("model", DEFAULT_MODEL),
        torch.__version__, transformers.__version__, trl.__version__,
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1"),
    )  # fmt: skip
    torch.manual_seed(int(cfg.get("seed", 0)))
    apply_gpu_budget()
    checkpoint = newest_checkpoint(run_dir) if args.resume else None
    if args.resume and checkpoint is None:
        raise SystemExit(f"--resume: no checkpoint-N in {run_dir} to resume from")
    model, tokenizer, _ = build_model(cfg, smoke, run_dir)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=build_rewards(cfg, smoke),
        args=grpo_config(cfg, run_name, run_dir, smoke, args.max_steps),
        train_dataset=build_dataset(cfg, smoke),
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
        callbacks=[step_logger()],
    )
    if not sys.stderr.isatty():
        # In a log file the step lines say it all; progress bars and metric dicts are noise.
        from transformers import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
    if checkpoint:
        log.info("resuming from %s (step %s)", checkpoint, checkpoint.rpartition("-")[2])
    result = trainer.train(resume_from_checkpoint=checkpoint)
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
        log.info("peak GPU memory allocated by torch: %.0f MiB", peak)
    if not smoke and trainer.is_world_process_zero():
        trainer.save_model(str(run_dir / "adapter"))
    first = int(checkpoint.rpartition("-")[2]) if checkpoint else 0
    log.info(
        "done: %d steps in %.1fs (%d in this launch), train loss %.6g", trainer.state.global_step,
        time.monotonic() - started, trainer.state.global_step - first, result.training_loss,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
