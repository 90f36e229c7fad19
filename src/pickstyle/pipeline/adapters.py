"""Context-style adapters: LoRA on the self-attention of Wan2.1-VACE's context (VACE) blocks.

A style adapter is a peft LoRA (default rank 128, alpha 128, dropout 0; A kaiming-uniform,
B zeros) on `vace_blocks.{i}.attn1.to_q|to_k|to_v` (optionally `to_out.0`) of a diffusers
`WanVACETransformer3DModel`. The effective weight of an adapted layer is
``W + scale * alpha / r * B @ A``.

Two file formats:

* diffusers LoRA format (what this project writes): a folder with `pytorch_lora_weights.safetensors`,
  keys `transformer.vace_blocks.{i}.attn1.to_q.lora_A.weight`, the LoraConfig (rank, alpha, ...)
  stored as safetensors metadata; `WanVACEPipeline.load_lora_weights(folder)` reads it directly.
* the authors' release: a `.pth` (torch.save of a state dict) or `.safetensors` with keys
  `module.vace_blocks.{i}.self_attn.{q,k,v,o}.lora_{A,B}.consistency.weight`, scale 1.0
  (alpha = rank) unless told otherwise.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from pickstyle.errors import PickStyleError
from pickstyle.errors import one_line as _one_line
from pickstyle.files import atomic_output

TARGETS = {
    "vace-qkv": r"vace_blocks\.\d+\.attn1\.(to_q|to_k|to_v)",
    "vace-qkvo": r"vace_blocks\.\d+\.attn1\.(to_q|to_k|to_v|to_out\.0)",
    "main-qkv": r"blocks\.\d+\.attn1\.(to_q|to_k|to_v)",
}
"""Target sets (regexes peft matches with re.fullmatch against full module names)."""

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
AUTHORS_ADAPTER_NAME = "consistency"

# authors' projection name <-> diffusers module suffix
_AUTHORS_TO_DIFFUSERS = {"q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0"}
_DIFFUSERS_TO_AUTHORS = {v: k for k, v in _AUTHORS_TO_DIFFUSERS.items()}

_AUTHORS_KEY = re.compile(
    r"(?:module\.)?vace_blocks\.(?P<block>\d+)\.self_attn\.(?P<proj>[qkvo])\.lora_(?P<ab>[AB])(?:\.\w+)?\.weight"
)
_DIFFUSERS_KEY = re.compile(r"(?:transformer\.)?(?P<module>[\w.]+?)\.lora_(?P<ab>[AB])\.weight")
_VACE_MODULE = re.compile(r"vace_blocks\.(?P<block>\d+)\.attn1\.(?P<proj>to_q|to_k|to_v|to_out\.0)")
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")


# --------------------------------------------------------------------------------------------
# adding, reading and saving an adapter on a transformer


def add_style_adapter(
    transformer,
    rank: int = 128,
    alpha: float = 128.0,
    targets: str = "vace-qkv",
    adapter_name: str = "pickstyle",
    dropout: float = 0.0,
):
    """Add a fresh trainable LoRA to `transformer`, freeze everything else, return its LoraConfig.

    Only this adapter's lora_A/lora_B are left trainable; they are float32 whatever the base dtype.
    """
    from peft import LoraConfig

    if targets not in TARGETS:
        raise PickStyleError(f"unknown adapter targets {targets!r}: choose one of {', '.join(TARGETS)}")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
        raise PickStyleError(f"adapter rank must be a positive integer, got {rank!r}")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise PickStyleError(f"adapter alpha must be a positive number, got {alpha!r}")
    if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
        raise PickStyleError(f"adapter dropout must be in [0, 1), got {dropout!r}")
    if adapter_name in (getattr(transformer, "peft_config", None) or {}):
        raise PickStyleError(f"adapter {adapter_name!r} already exists on the transformer")

    pattern = TARGETS[targets]
    matched = [
        name
        for name, module in transformer.named_modules()
        if re.fullmatch(pattern, name) and isinstance(module, torch.nn.Linear)
    ]
    if not matched:
        raise PickStyleError(
            f"adapter targets {targets!r} ({pattern}) match no linear layer of {type(transformer).__name__}"
        )

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=float(dropout),
        target_modules=pattern,
        init_lora_weights=True,
        bias="none",
    )
    transformer.add_adapter(config, adapter_name=adapter_name)

    for param in transformer.parameters():
        param.requires_grad_(False)
    for _, module in _lora_layers(transformer, adapter_name):
        for container in (module.lora_A, module.lora_B):
            layer = container[adapter_name]
            layer.to(torch.float32)
            for param in layer.parameters():
                param.requires_grad_(True)
    return config


def init_style_adapter(transformer, path, adapter_name: str = "pickstyle") -> int:
    """Set the LoRA `adapter_name` (as `add_style_adapter` made it) to an adapter file's weights (any
    format `load_style_adapter` reads), so that its update scale * B @ A equals the file's: A as in
    the file, B rescaled from the file's alpha / r to this adapter's. The file's layers must be among
    this adapter's, at its rank; its other layers keep their fresh start (B = 0). A bad file raises
    PickStyleError naming it and the key at fault. Returns the number of layers set."""
    file = _resolve_weight_file(Path(path))
    state, metadata = _read_checkpoint(file)
    entries, fmt = _parse_keys(state, file)
    _validate(entries, transformer, file)
    folded = convert_authors_state_dict(state) if fmt == "authors" else _fold_diffusers(entries, metadata, None, file)
    layers = dict(_lora_layers(transformer, adapter_name))
    if not layers:
        _require_adapter(transformer, adapter_name)
    keys = {(name, ab): key for key, name, ab, _ in entries}
    with torch.no_grad():
        for (name, ab), key in keys.items():
            module = layers.get(name)
            if module is None:
                raise PickStyleError(f"{file}: key '{key}': '{name}' is not among the layers this adapter trains")
            tensor = folded[f"transformer.{name}.lora_{ab}.weight"]
            rank = tensor.shape[0 if ab == "A" else 1]
            if rank != module.r[adapter_name]:
                raise PickStyleError(f"{file}: key '{key}' has rank {rank}, this adapter {module.r[adapter_name]} (set rank to match)")
            target = (module.lora_A if ab == "A" else module.lora_B)[adapter_name].weight
            target.copy_(tensor if ab == "A" else tensor / _module_scaling(module, adapter_name))
    return len(keys) // 2


def adapter_state_dict(transformer, adapter_name: str = "pickstyle", state_dict=None) -> dict[str, torch.Tensor]:
    """The adapter's weights as CPU tensor copies, keys WITHOUT the "transformer." prefix.

    Keys look like `vace_blocks.0.attn1.to_q.lora_A.weight` (peft's `get_peft_model_state_dict`);
    `WanVACEPipeline.save_lora_weights(transformer_lora_layers=...)` adds the prefix.
    `state_dict`: the transformer's full state dict when it must be gathered first (FSDP).
    """
    from peft.utils import get_peft_model_state_dict

    _require_adapter(transformer, adapter_name)
    state = get_peft_model_state_dict(transformer, state_dict=state_dict, adapter_name=adapter_name)
    return {key: value.detach().to("cpu").clone().contiguous() for key, value in state.items()}


def save_style_adapter(transformer, directory, adapter_name: str = "pickstyle", state_dict=None) -> Path:
    """Write the adapter as a diffusers LoRA folder (pytorch_lora_weights.safetensors + LoraConfig metadata).

    The file is written to a temporary name and moved into place; returns the folder.
    `state_dict`: as for `adapter_state_dict`.
    """
    from diffusers import WanVACEPipeline

    config = _require_adapter(transformer, adapter_name)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise PickStyleError(f"{directory}: exists and is not a folder")
    directory.mkdir(parents=True, exist_ok=True)
    layers = adapter_state_dict(transformer, adapter_name, state_dict)
    metadata = json.loads(json.dumps(config.to_dict(), default=_json_default))

    tmp = Path(tempfile.mkdtemp(prefix=".tmp-lora-", dir=directory))
    try:
        WanVACEPipeline.save_lora_weights(
            tmp,
            transformer_lora_layers=layers,
            weight_name=LORA_WEIGHT_NAME,
            transformer_lora_adapter_metadata=metadata,
        )
        target = directory / LORA_WEIGHT_NAME
        os.replace(tmp / LORA_WEIGHT_NAME, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def export_authors_format(transformer, path, adapter_name: str = "pickstyle") -> Path:
    """Write the adapter in the authors' key format (.pth or .safetensors), alpha/r folded into B (scale 1.0)."""
    _require_adapter(transformer, adapter_name)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".pth", ".pt", ".safetensors"):
        raise PickStyleError(f"{path}: the authors' format is written as .pth or .safetensors")

    state: dict[str, torch.Tensor] = {}
    for name, module in _lora_layers(transformer, adapter_name):
        match = _VACE_MODULE.fullmatch(name)
        if match is None:
            raise PickStyleError(
                f"{path}: adapter {adapter_name!r} has a LoRA on '{name}'; the authors' format holds only "
                "vace_blocks.{i}.attn1 q, k, v, o"
            )
        scaling = _module_scaling(module, adapter_name)
        a = module.lora_A[adapter_name].weight.detach().to("cpu", torch.float32)
        b = module.lora_B[adapter_name].weight.detach().to("cpu", torch.float32) * scaling
        prefix = f"module.vace_blocks.{match['block']}.self_attn.{_DIFFUSERS_TO_AUTHORS[match['proj']]}"
        state[f"{prefix}.lora_A.{AUTHORS_ADAPTER_NAME}.weight"] = a.clone().contiguous()
        state[f"{prefix}.lora_B.{AUTHORS_ADAPTER_NAME}.weight"] = b.clone().contiguous()

    with atomic_output(path) as tmp:
        if suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={"format": "pt"})
        else:
            torch.save(state, str(tmp))
    return path


# --------------------------------------------------------------------------------------------
# converting and loading


def convert_authors_state_dict(state_dict, alpha: float | None = None) -> dict[str, torch.Tensor]:
    """Authors' keys -> diffusers keys (`transformer.vace_blocks.{i}.attn1.to_q.lora_A.weight`, o -> to_out.0).

    With `alpha`, each B is multiplied by alpha / rank (rank = rows of its A), so the result has scale 1.0.
    """
    parsed = {}
    for key, value in state_dict.items():
        match = _AUTHORS_KEY.fullmatch(key)
        if match is None:
            raise PickStyleError(f"key '{key}' is not a key of the authors' adapter format")
        module = f"vace_blocks.{match['block']}.attn1.{_AUTHORS_TO_DIFFUSERS[match['proj']]}"
        if (module, match["ab"]) in parsed:
            raise PickStyleError(f"key '{key}' repeats the LoRA of '{module}'")
        parsed[(module, match["ab"])] = (key, value)
    for (module, ab), (key, _) in parsed.items():
        other = "B" if ab == "A" else "A"
        if (module, other) not in parsed:
            raise PickStyleError(f"key '{key}' has no matching lora_{other}")

    out: dict[str, torch.Tensor] = {}
    for (module, ab), (key, value) in parsed.items():
        if not isinstance(value, torch.Tensor):
            raise PickStyleError(f"key '{key}' is not a tensor")
        tensor = value.detach().to(torch.float32)
        if ab == "B" and alpha is not None:
            rank = parsed[(module, "A")][1].shape[0]
            tensor = tensor * (float(alpha) / rank)
        out[f"transformer.{module}.lora_{ab}.weight"] = tensor.contiguous()
    return out


def load_style_adapter(pipe, path, scale: float = 1.0, adapter_name: str = "pickstyle", alpha: float | None = None) -> str:
    """Load a style adapter (diffusers LoRA folder/file or the authors' .pth/.safetensors) into `pipe`.

    The file is validated against `pipe.transformer` before anything is loaded; a bad file raises
    PickStyleError naming it (and the key at fault) and leaves the pipeline as it was. Scale of the
    result: `scale * alpha / r`, where alpha is the `alpha` argument if given, else the file's LoRA
    config (diffusers format), else r (scale 1.0). An adapter of the same name is replaced; the
    loaded LoRA weights are float32 whatever the base dtype.
    Returns the adapter name.
    """
    if alpha is not None and not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise PickStyleError(f"adapter alpha must be a positive number, got {alpha!r}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise PickStyleError(f"adapter scale must be a finite number, got {scale!r}")
    transformer = pipe.transformer
    file = _resolve_weight_file(Path(path))
    state, metadata = _read_checkpoint(file)

    entries, fmt = _parse_keys(state, file)
    _validate(entries, transformer, file)

    if fmt == "authors":
        converted = convert_authors_state_dict(state, alpha=alpha)
    else:
        converted = _fold_diffusers(entries, metadata, alpha, file)

    if adapter_name in (getattr(transformer, "peft_config", None) or {}):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Adapter .* was active which is now deleted")
            pipe.delete_adapters(adapter_name)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Already found a `peft_config` attribute")
        pipe.load_lora_weights(converted, adapter_name=adapter_name)
    for _, module in _lora_layers(transformer, adapter_name):  # diffusers loads them in the base dtype
        module.lora_A[adapter_name].to(torch.float32)
        module.lora_B[adapter_name].to(torch.float32)
    pipe.set_adapters([adapter_name], [float(scale)])
    return adapter_name


# --------------------------------------------------------------------------------------------
# helpers


def _json_default(value):
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    return str(value)


def _require_adapter(transformer, adapter_name):
    configs = getattr(transformer, "peft_config", None) or {}
    if adapter_name not in configs:
        have = ", ".join(configs) or "none"
        raise PickStyleError(f"the transformer has no adapter {adapter_name!r} (adapters: {have})")
    return configs[adapter_name]


def _lora_layers(transformer, adapter_name):
    from peft.tuners.lora import LoraLayer

    for name, module in transformer.named_modules():
        if isinstance(module, LoraLayer) and adapter_name in module.lora_A:
            yield name, module


def _module_scaling(module, adapter_name) -> float:
    """alpha / r of one LoRA layer (alpha / sqrt(r) for rsLoRA), ignoring the runtime scale."""
    r = module.r[adapter_name]
    alpha = module.lora_alpha[adapter_name]
    if module.use_rslora.get(adapter_name, False):
        return alpha / math.sqrt(r)
    return alpha / r


def _resolve_weight_file(path: Path) -> Path:
    if not path.exists():
        raise PickStyleError(f"{path}: no such file or folder")
    if path.is_dir():
        preferred = path / LORA_WEIGHT_NAME
        if preferred.is_file():
            return preferred
        for pattern in ("*.safetensors", "*.pth", "*.pt", "*.bin"):
            found = sorted(p for p in path.glob(pattern) if p.is_file())
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise PickStyleError(
                    f"{path}: folder has {len(found)} {pattern} files and no {LORA_WEIGHT_NAME}; pass one file"
                )
        raise PickStyleError(f"{path}: folder holds no adapter weights ({LORA_WEIGHT_NAME}, .safetensors or .pth)")
    return path


def _read_checkpoint(file: Path):
    """(state dict of tensors, safetensors metadata or None); any failure -> PickStyleError naming the file."""
    metadata = None
    if file.suffix.lower() == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(file), framework="pt", device="cpu") as handle:
                metadata = handle.metadata()
                obj = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as exc:  # safetensors raises its own error types
            raise PickStyleError(f"{file}: not a readable .safetensors file ({_one_line(exc)})") from None
    else:
        try:
            obj = torch.load(str(file), map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...
            raise PickStyleError(f"{file}: not a readable PyTorch checkpoint ({_one_line(exc)})") from None

    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict):
        raise PickStyleError(f"{file}: holds a {type(obj).__name__}, not a state dict of LoRA weights")
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise PickStyleError(f"{file}: key '{key}' is a {type(value).__name__}, not a tensor")
    if not obj or not any("lora" in str(key).lower() for key in obj):
        raise PickStyleError(f"{file}: holds no LoRA weights (no key with 'lora')")
    return obj, metadata


def _parse_keys(state, file: Path):
    """[(key, module name, 'A'|'B', tensor)] in file order, and the format ('authors' or 'diffusers')."""
    keys = list(state)
    fmt = "authors" if any(_AUTHORS_KEY.fullmatch(k) for k in keys) else "diffusers"
    entries = []
    for key in keys:
        if fmt == "authors":
            match = _AUTHORS_KEY.fullmatch(key)
            module = match and f"vace_blocks.{match['block']}.attn1.{_AUTHORS_TO_DIFFUSERS[match['proj']]}"
        else:
            match = _DIFFUSERS_KEY.fullmatch(key)
            module = match and match["module"]
            if module and ("lora_" in module or module.endswith("base_layer") or ".base_layer." in module):
                match = None
        if match is None:
            expected = (
                "module.vace_blocks.{i}.self_attn.{q,k,v,o}.lora_{A,B}.consistency.weight"
                if fmt == "authors"
                else "transformer.<module>.lora_{A,B}.weight"
            )
            raise PickStyleError(f"{file}: unrecognised key '{key}' (expected {expected})")
        entries.append((key, module, match["ab"], state[key]))
    return entries, fmt


def _model_summary(transformer) -> tuple[int, str]:
    config = transformer.config
    dim = int(config.num_attention_heads) * int(config.attention_head_dim)
    vace_layers = list(getattr(config, "vace_layers", None) or [])
    num_vace = len(getattr(transformer, "vace_blocks", []))
    return dim, f"it has {num_vace} VACE blocks (vace_layers {vace_layers}), dim {dim}"


def _validate(entries, transformer, file: Path) -> None:
    """Every key must name a linear layer of the transformer with fitting shapes; else PickStyleError."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    modules = dict(transformer.named_modules())
    dim, summary = _model_summary(transformer)
    prefix = f"{file}: key '{{key}}' does not fit the loaded model: "
    seen: dict[tuple[str, str], tuple[str, torch.Tensor]] = {}

    for key, name, ab, tensor in entries:
        fault = prefix.format(key=key)
        module = modules.get(name)
        if module is None:
            block = re.match(r"(?P<kind>vace_blocks|blocks)\.(?P<index>\d+)\.", name)
            if block is not None:
                count = len(getattr(transformer, block["kind"], []))
                if int(block["index"]) >= count:
                    if block["kind"] == "vace_blocks":
                        raise PickStyleError(fault + summary)
                    raise PickStyleError(fault + f"it has {count} main blocks, dim {dim}")
            raise PickStyleError(fault + f"it has no module '{name}' ({summary})")
        base = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
        if not isinstance(base, torch.nn.Linear):
            raise PickStyleError(fault + f"'{name}' is a {type(base).__name__}, not a linear layer")
        if (name, ab) in seen:
            raise PickStyleError(f"{file}: key '{key}' repeats the lora_{ab} of '{name}' (key '{seen[(name, ab)][0]}')")
        shape = list(tensor.shape)
        if ab == "A":
            fits, expects = tensor.ndim == 2 and shape[1] == base.in_features, f"[r, {base.in_features}]"
        else:
            fits, expects = tensor.ndim == 2 and shape[0] == base.out_features, f"[{base.out_features}, r]"
        if not fits or 0 in shape:
            raise PickStyleError(
                fault + f"shape {shape}, the model expects {expects} (a Wan2.1-VACE model of dim {dim})"
            )
        seen[(name, ab)] = (key, tensor)

    for (name, ab), (key, tensor) in seen.items():
        other = "B" if ab == "A" else "A"
        if (name, other) not in seen:
            raise PickStyleError(f"{file}: key '{key}' has no matching lora_{other} for '{name}'")
        if ab == "A":
            other_key, other_tensor = seen[(name, "B")]
            if tensor.shape[0] != other_tensor.shape[1]:
                raise PickStyleError(
                    f"{file}: key '{other_key}' has rank {other_tensor.shape[1]} but '{key}' has rank {tensor.shape[0]}"
                )


def _fold_diffusers(entries, metadata, alpha, file: Path) -> dict[str, torch.Tensor]:
    """diffusers-format entries -> prefixed state dict with scale alpha/r folded into every B."""
    config = None
    raw = (metadata or {}).get("lora_adapter_metadata")
    if raw and alpha is None:
        try:
            packed = json.loads(raw)
            fields = {k.removeprefix("transformer."): v for k, v in packed.items() if k.startswith("transformer.")}
            config = fields or None
        except (TypeError, ValueError) as exc:
            raise PickStyleError(f"{file}: unreadable LoRA metadata ({_one_line(exc)})") from None

    ranks = {name: tensor.shape[0] for _, name, ab, tensor in entries if ab == "A"}
    out: dict[str, torch.Tensor] = {}
    for _, name, ab, tensor in entries:
        tensor = tensor.detach().to(torch.float32)
        if ab == "B":
            tensor = tensor * _file_scaling(name, ranks[name], alpha, config, file)
        out[f"transformer.{name}.lora_{ab}.weight"] = tensor.contiguous()
    return out


def _file_scaling(name: str, rank: int, alpha, config, file: Path) -> float:
    if alpha is not None:
        return float(alpha) / rank
    if not config:
        return 1.0
    try:
        module_alpha = float(config.get("lora_alpha", rank))
        for pattern, value in (config.get("alpha_pattern") or {}).items():
            if re.match(rf"(.*\.)?({pattern})$", name):  # peft's get_pattern_key rule
                module_alpha = float(value)
                break
    except (TypeError, ValueError, re.error) as exc:
        raise PickStyleError(f"{file}: unreadable LoRA metadata ({_one_line(exc)})") from None
    if config.get("use_rslora"):
        return module_alpha / math.sqrt(rank)
    return module_alpha / rank
