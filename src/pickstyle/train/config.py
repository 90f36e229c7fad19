"""The settings of `pickstyle train`: one dataclass, read from YAML, every key also a flag.

Defaults are the authors' (method spec sections 2 to 4). Imports nothing heavy, so
`pickstyle train --help` and `--print-config` are fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from pickstyle.errors import SEED_LIMIT, PickStyleError

LR_SCHEDULES = ("constant", "linear", "cosine")


@dataclass
class TrainConfig:
    # what to train on, and where it goes
    model: str = ""  # diffusers Wan2.1-VACE folder (or hub id)
    data: list[str] = field(default_factory=list)  # dataset folders / manifests, joined
    output: str = "runs/pickstyle"  # run folder: adapter/, checkpoints/, train.log, validation/
    # clips
    height: int = 480
    width: int = 832
    frames: int = 81  # 4k+1
    motion: bool = True  # synthetic camera motion (false: static clips, the augmentation ablation)
    # adapter
    rank: int = 128
    alpha: float = 128.0
    targets: str = "vace-qkv"  # vace-qkv, vace-qkvo, or main-qkv (the placement ablation)
    init_adapter: str = ""  # start from these adapter weights (a folder or file, any format stylize's --adapter takes) instead of B = 0, e.g. to fine-tune a released adapter on new pairs; rank and targets must fit them
    # objective and optimiser
    shift: float = 5.0  # sigma' = shift s / (1 + (shift - 1) s) on the 1000-step grid
    lr: float = 5.6e-4
    lr_schedule: str = "constant"  # constant (the authors'), linear or cosine decay to 0 at the last step
    warmup_steps: int = 0  # linear warm-up from 0 over this many optimiser steps
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0
    grad_accum: int = 1  # micro-batches (of 1 clip per process) per optimiser step
    max_steps: int = 3000  # optimiser steps
    epochs: int = 0  # if > 0, stop after this many passes over the data (whichever comes first)
    seed: int = 2025
    # precision and memory
    dtype: str = "bf16"  # base weights: bf16, fp16 or fp32; the adapter is always fp32
    gradient_checkpointing: bool = True
    cpu: bool = False  # train on the CPU (also under torchrun: gloo backend)
    max_sequence_length: int = 512
    # checkpoints, logs, validation
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    resume: bool = False  # continue from the latest checkpoint in output/checkpoints
    log_every: int = 10
    tensorboard: bool = False
    validate_every: int = 0  # 0: no validation videos
    validation_video: str = ""
    validation_prompt: str = ""
    validation_steps: int = 20
    validation_skip: int = 4

    def check(self) -> TrainConfig:
        """Raise PickStyleError naming the first bad setting."""
        if not self.model:
            raise PickStyleError("model: not set (a diffusers Wan2.1-VACE folder, --model)")
        if not self.data:
            raise PickStyleError("data: not set (one or more datasets, --data)")
        for name in ("height", "width"):
            value = getattr(self, name)
            if value < 16 or value % 16:
                raise PickStyleError(f"{name}: {value} must be a positive multiple of 16")
        if self.frames < 1 or (self.frames - 1) % 4:
            raise PickStyleError(f"frames: {self.frames} must be 4k+1 (e.g. 17, 49, 81)")
        if self.init_adapter and not Path(self.init_adapter).exists():
            raise PickStyleError(f"init_adapter: {self.init_adapter}: no such file or folder")
        if self.targets not in ("vace-qkv", "vace-qkvo", "main-qkv"):
            raise PickStyleError(f"targets: {self.targets!r} must be vace-qkv, vace-qkvo or main-qkv")
        if self.lr_schedule not in LR_SCHEDULES:
            raise PickStyleError(f"lr_schedule: {self.lr_schedule!r} must be {', '.join(LR_SCHEDULES[:-1])} or {LR_SCHEDULES[-1]}")
        if self.dtype not in ("bf16", "fp16", "fp32"):
            raise PickStyleError(f"dtype: {self.dtype!r} must be bf16, fp16 or fp32")
        for name in ("rank", "grad_accum", "max_steps", "log_every", "validation_steps", "max_sequence_length"):
            if getattr(self, name) < 1:
                raise PickStyleError(f"{name}: {getattr(self, name)} must be at least 1")
        if not 0 <= self.seed < SEED_LIMIT:
            raise PickStyleError(f"seed: {self.seed} must be in [0, 2^64)")
        for name in ("alpha", "lr", "shift"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise PickStyleError(f"{name}: {value} must be a positive number")
        for name in ("weight_decay", "grad_clip", "epochs", "warmup_steps", "checkpoint_every", "validate_every", "keep_checkpoints"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise PickStyleError(f"{name}: {value} must be >= 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise PickStyleError(f"beta1/beta2: {self.beta1}, {self.beta2} must be in [0, 1)")
        if self.validate_every and not (self.validation_video and self.validation_prompt):
            raise PickStyleError("validate_every: set validation_video and validation_prompt as well")
        if not 0 <= self.validation_skip < self.validation_steps:
            raise PickStyleError(f"validation_skip: {self.validation_skip} must be in [0, validation_steps)")
        return self

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per config key (`max_steps` -> `--max-steps`; booleans as `--x/--no-x`),
    defaulting to None so that only the flags given override the YAML file."""
    parser.add_argument("--config", help="YAML file of settings (keys as in --print-config)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved settings as YAML and exit")
    defaults = TrainConfig()
    for name, f in FIELDS.items():
        default = getattr(defaults, name)
        if f.type == "bool":
            parser.add_argument(_flag(name), action=argparse.BooleanOptionalAction, default=None, help=f"(default {default})")
        elif f.type == "list[str]":
            parser.add_argument(_flag(name), action="append", default=None, metavar="PATH", help="repeatable")
        else:
            kind = {"int": int, "float": float}.get(f.type, str)
            parser.add_argument(_flag(name), type=kind, default=None, help=f"(default {default!r})")


def _coerce(name: str, value, source: str):
    kind = FIELDS[name].type
    try:
        if kind == "bool":
            if not isinstance(value, bool):
                raise TypeError
            return value
        if kind == "list[str]":
            values = [value] if isinstance(value, (str, Path)) else list(value)
            return [str(v) for v in values]
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        return "" if value is None else str(value)
    except (TypeError, ValueError):
        raise PickStyleError(f"{source}: {name}: {value!r} is not a valid {kind}") from None


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the YAML file, then the flags (relative paths: to the working folder)."""
    import yaml

    values = {}
    if args.config:
        path = Path(args.config)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as err:
            raise PickStyleError(f"{path}: cannot read the config ({err.strerror or err})") from None
        except yaml.YAMLError as err:
            raise PickStyleError(f"{path}: not valid YAML ({' '.join(str(err).split())[:160]})") from None
        if not isinstance(loaded, dict):
            raise PickStyleError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
        for key, value in loaded.items():
            name = str(key).replace("-", "_")
            if name not in FIELDS:
                raise PickStyleError(f"{path}: unknown key {key!r} (see pickstyle train --print-config)")
            values[name] = _coerce(name, value, str(path))
    for name in FIELDS:
        flag = getattr(args, name, None)
        if flag is not None:
            values[name] = flag
    return TrainConfig(**values)

