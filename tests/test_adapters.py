"""Context-style adapters on the tiny random Wan2.1-VACE: placement, init, formats, validation."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from pickstyle.errors import PickStyleError
from pickstyle.pipeline.adapters import (
    TARGETS,
    adapter_state_dict,
    add_style_adapter,
    convert_authors_state_dict,
    export_authors_format,
    init_style_adapter,
    load_style_adapter,
    save_style_adapter,
)


def lora_module_names(transformer, adapter_name: str | None = None) -> list[str]:
    """Names of the modules that carry a LoRA (of `adapter_name`, or of any adapter)."""
    from peft.tuners.lora import LoraLayer

    return [name for name, module in transformer.named_modules()
            if isinstance(module, LoraLayer) and (adapter_name is None or adapter_name in module.lora_A)]  # fmt: skip


def adapter_num_parameters(dim: int, num_vace_blocks: int, rank: int, num_projections: int) -> int:
    """blocks x projections x (A [r, dim] + B [dim, r]): the sizes the docs quote."""
    return num_vace_blocks * num_projections * 2 * rank * dim

DIM = 24  # tiny transformer: 2 heads x 12
NUM_VACE = 2  # vace_layers [0, 2]
NUM_BLOCKS = 3
PROJ = {"q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0"}


@pytest.fixture(scope="module")
def components():
    from pickstyle.testing import build_tiny_components

    return build_tiny_components(seed=0)


@pytest.fixture
def make_pipe(components):
    """A fresh pipeline whose transformer is an untouched copy of the tiny one."""
    from diffusers import WanVACEPipeline

    def make():
        return WanVACEPipeline(**{**components, "transformer": copy.deepcopy(components["transformer"])})

    return make


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    return {
        "hidden_states": torch.randn(1, 16, 1, 4, 4, generator=g),
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": torch.randn(1, 6, 32, generator=g),
        "control_hidden_states": torch.randn(1, 96, 1, 4, 4, generator=g),
    }


def run(transformer, inputs):
    with torch.no_grad():
        return transformer(**inputs, return_dict=False)[0]


def randomize_lora(transformer, adapter_name="pickstyle", seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in transformer.named_parameters():
            if "lora_" in name and f".{adapter_name}." in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.3)


def expected_names(pattern_blocks, count, projections):
    return {f"{pattern_blocks}.{i}.attn1.{PROJ[p]}" for i in range(count) for p in projections}


def authors_state(rank=4, blocks=range(NUM_VACE), projections="qkv", dim=DIM, prefix="module.", seed=5):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i in blocks:
        for p in projections:
            base = f"{prefix}vace_blocks.{i}.self_attn.{p}"
            state[f"{base}.lora_A.consistency.weight"] = torch.randn(rank, dim, generator=g)
            state[f"{base}.lora_B.consistency.weight"] = torch.randn(dim, rank, generator=g)
    return state


def effective_check(module, a, b, factor):
    """module(x) == x @ (W + factor * B A).T + bias."""
    base = module.get_base_layer()
    x = torch.randn(5, base.in_features, generator=torch.Generator().manual_seed(9))
    want = x @ (base.weight + factor * b @ a).T + base.bias
    with torch.no_grad():
        got = module(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- placement and init


def test_vace_qkv_targets_only_vace_self_attention(make_pipe):
    t = make_pipe().transformer
    config = add_style_adapter(t, rank=4, alpha=4.0)
    assert config.r == 4 and config.lora_alpha == 4.0 and config.lora_dropout == 0.0
    names = set(lora_module_names(t, "pickstyle"))
    assert names == expected_names("vace_blocks", NUM_VACE, "qkv")
    assert not any(n.startswith("blocks.") for n in names)


def test_vace_qkvo_adds_out_projection(make_pipe):
    t = make_pipe().transformer
    add_style_adapter(t, rank=4, targets="vace-qkvo")
    assert set(lora_module_names(t)) == expected_names("vace_blocks", NUM_VACE, "qkvo")


def test_main_qkv_targets_only_main_blocks(make_pipe):
    t = make_pipe().transformer
    add_style_adapter(t, rank=4, targets="main-qkv")
    assert set(lora_module_names(t)) == expected_names("blocks", NUM_BLOCKS, "qkv")
    assert re.fullmatch(TARGETS["main-qkv"], "vace_blocks.0.attn1.to_q") is None


def test_bad_targets_raise(make_pipe, components):
    t = make_pipe().transformer
    with pytest.raises(PickStyleError, match="unknown adapter targets 'vace-ffn'"):
        add_style_adapter(t, targets="vace-ffn")
    from diffusers import WanTransformer3DModel

    plain = WanTransformer3DModel(num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
                                  text_dim=8, freq_dim=16, ffn_dim=8, num_layers=1, rope_max_seq_len=8)
    with pytest.raises(PickStyleError, match="match no linear layer"):
        add_style_adapter(plain)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_trainable_params_are_fp32_lora_only(make_pipe, dtype):
    t = make_pipe().transformer.to(dtype)
    add_style_adapter(t, rank=4, alpha=8.0)
    trainable = {n: p for n, p in t.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A.pickstyle." in n or ".lora_B.pickstyle." in n for n in trainable)
    assert all(p.dtype == torch.float32 for p in trainable.values())
    assert sum(p.numel() for p in trainable.values()) == adapter_num_parameters(DIM, NUM_VACE, 4, 3)
    base = t.vace_blocks[0].attn1.to_q.get_base_layer()
    assert base.weight.dtype == dtype and not base.weight.requires_grad
    # kaiming-uniform A (nonzero), zero B
    assert t.vace_blocks[0].attn1.to_q.lora_A["pickstyle"].weight.abs().sum() > 0
    assert t.vace_blocks[0].attn1.to_q.lora_B["pickstyle"].weight.abs().sum() == 0
    out = t.vace_blocks[1].attn1.to_k(torch.randn(2, DIM, dtype=dtype))
    assert out.dtype == dtype


def test_outputs_unchanged_right_after_adding(make_pipe, inputs):
    t = make_pipe().transformer
    before = run(t, inputs)
    add_style_adapter(t)  # default rank 128 > dim: fine for peft
    assert t.peft_config["pickstyle"].r == 128 and t.peft_config["pickstyle"].lora_alpha == 128.0
    torch.testing.assert_close(run(t, inputs), before, rtol=0, atol=0)


def test_parameter_count_formula():
    assert round(adapter_num_parameters(5120, 8, 128, 3) / 1e6, 1) == 31.5
    assert round(adapter_num_parameters(1536, 15, 128, 3) / 1e6, 1) == 17.7
    assert round(adapter_num_parameters(5120, 8, 128, 4) / 1e6, 1) == 41.9
    assert round(adapter_num_parameters(1536, 15, 128, 4) / 1e6, 1) == 23.6


# ---------------------------------------------------------------------------- effective weight


def test_effective_weight_diffusers_format(make_pipe, tmp_path):
    t = make_pipe().transformer
    add_style_adapter(t, rank=4, alpha=10.0)
    randomize_lora(t)
    folder = save_style_adapter(t, tmp_path / "style")
    assert (folder / "pytorch_lora_weights.safetensors").is_file()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp leftovers
    a = t.vace_blocks[0].attn1.to_q.lora_A["pickstyle"].weight.detach().clone()
    b = t.vace_blocks[0].attn1.to_q.lora_B["pickstyle"].weight.detach().clone()

    pipe = make_pipe()
    assert load_style_adapter(pipe, folder, scale=0.5) == "pickstyle"
    effective_check(pipe.transformer.vace_blocks[0].attn1.to_q, a, b, 0.5 * 10.0 / 4)
    # the bare file works too, and a user alpha overrides the stored one
    load_style_adapter(pipe, folder / "pytorch_lora_weights.safetensors", alpha=2.0)
    effective_check(pipe.transformer.vace_blocks[0].attn1.to_q, a, b, 2.0 / 4)


def test_effective_weight_diffusers_file_without_metadata(make_pipe, tmp_path):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(3, DIM, generator=g), torch.randn(DIM, 3, generator=g)
    path = tmp_path / "plain.safetensors"
    save_file({"transformer.vace_blocks.1.attn1.to_v.lora_A.weight": a,
               "transformer.vace_blocks.1.attn1.to_v.lora_B.weight": b}, str(path))
    pipe = make_pipe()
    load_style_adapter(pipe, path)
    effective_check(pipe.transformer.vace_blocks[1].attn1.to_v, a, b, 1.0)
    load_style_adapter(pipe, path, alpha=6.0, scale=2.0)
    effective_check(pipe.transformer.vace_blocks[1].attn1.to_v, a, b, 2.0 * 6.0 / 3)


@pytest.mark.parametrize("alpha, scale", [(None, 1.0), (12.0, 0.75)])
def test_effective_weight_authors_format(make_pipe, tmp_path, alpha, scale):
    state = authors_state(rank=4, projections="qkvo")
    path = tmp_path / "adapter.pth"
    torch.save(state, path)
    pipe = make_pipe()
    load_style_adapter(pipe, path, scale=scale, alpha=alpha)
    factor = scale * (1.0 if alpha is None else alpha / 4)
    for p, attr in [("q", "to_q"), ("o", None)]:
        key = f"module.vace_blocks.1.self_attn.{p}.lora_%s.consistency.weight"
        attn = pipe.transformer.vace_blocks[1].attn1
        module = getattr(attn, attr) if attr else attn.to_out[0]
        effective_check(module, state[key % "A"], state[key % "B"], factor)


def test_convert_authors_state_dict_keys_and_alpha():
    state = authors_state(rank=4, projections="qo", blocks=[1], prefix="")
    out = convert_authors_state_dict(state)
    assert set(out) == {f"transformer.vace_blocks.1.attn1.{m}.lora_{ab}.weight"
                        for m in ("to_q", "to_out.0") for ab in "AB"}
    scaled = convert_authors_state_dict(state, alpha=2.0)
    key = "transformer.vace_blocks.1.attn1.to_q.lora_B.weight"
    torch.testing.assert_close(scaled[key], out[key] * 0.5)
    torch.testing.assert_close(scaled[key.replace("_B", "_A")], out[key.replace("_B", "_A")])
    with pytest.raises(PickStyleError, match=r"'vace_blocks\.1\.self_attn\.q\.lora_C\.weight'"):
        convert_authors_state_dict({**state, "vace_blocks.1.self_attn.q.lora_C.weight": torch.zeros(1)})


# ---------------------------------------------------------------------------- round trips


@pytest.fixture
def trained(make_pipe, inputs):
    """A pipeline with a rank-4, alpha-8 qkvo adapter holding random weights, and its outputs."""
    pipe = make_pipe()
    base_out = run(pipe.transformer, inputs)
    add_style_adapter(pipe.transformer, rank=4, alpha=8.0, targets="vace-qkvo")
    randomize_lora(pipe.transformer)
    out = run(pipe.transformer, inputs)
    assert not torch.allclose(out, base_out, atol=1e-4)  # the adapter matters
    return pipe, out


def test_round_trip_diffusers_format(trained, make_pipe, inputs, tmp_path):
    pipe, want = trained
    folder = save_style_adapter(pipe.transformer, tmp_path / "out")
    state = adapter_state_dict(pipe.transformer)
    assert "vace_blocks.0.attn1.to_out.0.lora_B.weight" in state and not any(k.startswith("transformer.") for k in state)

    ours = make_pipe()
    load_style_adapter(ours, folder)
    torch.testing.assert_close(run(ours.transformer, inputs), want)

    plain = make_pipe()  # diffusers alone reads rank/alpha from the file's metadata
    plain.load_lora_weights(folder, adapter_name="x")
    assert plain.transformer.peft_config["x"].lora_alpha == 8.0
    torch.testing.assert_close(run(plain.transformer, inputs), want)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip_authors_format(trained, make_pipe, inputs, tmp_path, suffix):
    pipe, want = trained
    path = export_authors_format(pipe.transformer, tmp_path / f"adapter{suffix}")
    if suffix == ".pth":
        state = torch.load(path, weights_only=True)
    else:
        from safetensors.torch import load_file

        state = load_file(str(path))
    assert len(state) == NUM_VACE * 4 * 2
    assert all(k.startswith("module.vace_blocks.") and k.endswith(".consistency.weight") for k in state)
    assert "module.vace_blocks.1.self_attn.o.lora_B.consistency.weight" in state

    loaded = make_pipe()
    load_style_adapter(loaded, path)
    torch.testing.assert_close(run(loaded.transformer, inputs), want)

    # without the DDP prefix, and wrapped in {"state_dict": ...}
    bare = tmp_path / "bare.pth"
    torch.save({"state_dict": {k.removeprefix("module."): v for k, v in state.items()}}, bare)
    load_style_adapter(loaded, bare)  # replaces the adapter of the same name
    assert list(loaded.transformer.peft_config) == ["pickstyle"]
    torch.testing.assert_close(run(loaded.transformer, inputs), want)


@pytest.mark.parametrize("fmt", ["diffusers", "authors"])
def test_init_adapter_starts_training_from_a_files_update(trained, make_pipe, inputs, tmp_path, fmt):
    pipe, want = trained  # rank 4, alpha 8 (scale 2)
    if fmt == "diffusers":
        path = save_style_adapter(pipe.transformer, tmp_path / "out")
    else:
        path = export_authors_format(pipe.transformer, tmp_path / "adapter.pth")  # scale 1: B carries the 2
    fresh = make_pipe().transformer
    add_style_adapter(fresh, rank=4, alpha=2.0, targets="vace-qkvo")  # another scale: B is rescaled to match
    assert init_style_adapter(fresh, path) == NUM_VACE * 4
    torch.testing.assert_close(run(fresh, inputs), want)
    assert all(p.requires_grad and p.dtype == torch.float32 for n, p in fresh.named_parameters() if "lora_" in n)


def test_init_adapter_layers_rank_and_targets(trained, make_pipe, inputs, tmp_path):
    pipe, _ = trained
    qkvo = save_style_adapter(pipe.transformer, tmp_path / "qkvo")
    narrow = make_pipe().transformer
    add_style_adapter(narrow, rank=4, targets="vace-qkv")
    with pytest.raises(PickStyleError, match=r"qkvo.*to_out\.0.*not among the layers this adapter trains"):
        init_style_adapter(narrow, qkvo)
    low = make_pipe().transformer
    add_style_adapter(low, rank=2, targets="vace-qkvo")
    with pytest.raises(PickStyleError, match="has rank 4, this adapter 2"):
        init_style_adapter(low, qkvo)
    # a file of fewer layers: those it has are set, the others keep B = 0
    qkv_pipe = make_pipe()
    add_style_adapter(qkv_pipe.transformer, rank=4, targets="vace-qkv")
    randomize_lora(qkv_pipe.transformer)
    qkv = save_style_adapter(qkv_pipe.transformer, tmp_path / "qkv")
    wide = make_pipe().transformer
    add_style_adapter(wide, rank=4, targets="vace-qkvo")
    assert init_style_adapter(wide, qkv) == NUM_VACE * 3
    torch.testing.assert_close(run(wide, inputs), run(qkv_pipe.transformer, inputs))
    assert all(float(p.detach().abs().sum()) == 0 for n, p in wide.named_parameters() if "to_out" in n and "lora_B" in n)


def test_export_refuses_main_block_adapter(make_pipe, tmp_path):
    t = make_pipe().transformer
    add_style_adapter(t, rank=2, targets="main-qkv")
    with pytest.raises(PickStyleError, match=r"blocks\.0\.attn1\.to_q"):
        export_authors_format(t, tmp_path / "a.pth")
    assert not (tmp_path / "a.pth").exists()


# ---------------------------------------------------------------------------- bad files


def load_error(pipe, path, **kwargs) -> str:
    with pytest.raises(PickStyleError) as info:
        load_style_adapter(pipe, path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_block_index(make_pipe, tmp_path):
    path = tmp_path / "adapter.pth"
    torch.save(authors_state(blocks=[0, 9]), path)
    msg = load_error(make_pipe(), path)
    assert "module.vace_blocks.9.self_attn.q.lora_A.consistency.weight" in msg and str(path) in msg
    assert "2 VACE blocks (vace_layers [0, 2]), dim 24" in msg


def test_wrong_dim(make_pipe, tmp_path):
    path = tmp_path / "adapter.safetensors"
    from safetensors.torch import save_file

    save_file(authors_state(dim=32), str(path))
    msg = load_error(make_pipe(), path)
    assert re.search(r"key 'module\.vace_blocks\.0\.self_attn\.[qkv]\.lora_A\.consistency\.weight'", msg)
    assert "shape [4, 32], the model expects [r, 24]" in msg


def test_rank_mismatch_and_missing_partner(make_pipe, tmp_path):
    state = authors_state(blocks=[0], projections="q")
    state["module.vace_blocks.0.self_attn.q.lora_B.consistency.weight"] = torch.zeros(DIM, 3)
    torch.save(state, tmp_path / "a.pth")
    assert "rank" in load_error(make_pipe(), tmp_path / "a.pth")
    del state["module.vace_blocks.0.self_attn.q.lora_B.consistency.weight"]
    torch.save(state, tmp_path / "b.pth")
    assert "has no matching lora_B" in load_error(make_pipe(), tmp_path / "b.pth")


def test_unknown_keys(make_pipe, tmp_path):
    state = authors_state()
    state["module.vace_blocks.0.cross_attn.q.lora_A.consistency.weight"] = torch.zeros(4, DIM)
    torch.save(state, tmp_path / "a.pth")
    assert "'module.vace_blocks.0.cross_attn.q.lora_A.consistency.weight'" in load_error(make_pipe(), tmp_path / "a.pth")
    diffusers_keys = {"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, DIM),
                      "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(DIM, 2),
                      "transformer.blocks.0.attn1.to_x.lora_A.weight": torch.zeros(2, DIM)}
    torch.save(diffusers_keys, tmp_path / "b.pth")
    msg = load_error(make_pipe(), tmp_path / "b.pth")
    assert "'transformer.blocks.0.attn1.to_x.lora_A.weight'" in msg and "no module" in msg
    torch.save({"transformer.blocks.0.norm1.lora_A.weight": torch.zeros(2, DIM)}, tmp_path / "c.pth")
    assert "norm1" in load_error(make_pipe(), tmp_path / "c.pth")
    torch.save({"unet.weight": torch.zeros(2)}, tmp_path / "d.pth")
    assert "no LoRA weights" in load_error(make_pipe(), tmp_path / "d.pth")


@pytest.mark.parametrize("name", ["notes.pth", "notes.safetensors"])
def test_not_a_checkpoint(make_pipe, tmp_path, name):
    path = tmp_path / name
    path.write_text("this is not a checkpoint\n")
    msg = load_error(make_pipe(), path)
    assert str(path) in msg and "not a readable" in msg


def test_missing_and_empty_paths(make_pipe, tmp_path):
    pipe = make_pipe()
    assert str(tmp_path / "nope.pth") in load_error(pipe, tmp_path / "nope.pth")
    empty = tmp_path / "empty"
    empty.mkdir()
    msg = load_error(pipe, empty)
    assert str(empty) in msg and "no adapter weights" in msg
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    assert "not a state dict" in load_error(pipe, tmp_path / "tensor.pth")


def test_bad_file_leaves_loaded_adapter_alone(make_pipe, tmp_path, inputs):
    pipe = make_pipe()
    torch.save(authors_state(), tmp_path / "good.pth")
    load_style_adapter(pipe, tmp_path / "good.pth")
    before = run(pipe.transformer, inputs)
    torch.save(authors_state(blocks=[5]), tmp_path / "bad.pth")
    load_error(pipe, tmp_path / "bad.pth")
    assert list(pipe.transformer.peft_config) == ["pickstyle"]
    torch.testing.assert_close(run(pipe.transformer, inputs), before)


def test_load_into_bf16_keeps_lora_fp32(make_pipe, tmp_path):
    state = authors_state(projections="q", blocks=[0])
    torch.save(state, tmp_path / "a.pth")
    pipe = make_pipe()
    pipe.transformer.to(torch.bfloat16)
    load_style_adapter(pipe, tmp_path / "a.pth")
    module = pipe.transformer.vace_blocks[0].attn1.to_q
    assert module.lora_A["pickstyle"].weight.dtype == torch.float32
    assert module.get_base_layer().weight.dtype == torch.bfloat16
    assert module(torch.randn(2, DIM, dtype=torch.bfloat16)).dtype == torch.bfloat16
