"""A tiny random Wan2.1-VACE stack built offline, for tests, benchmarks and smoke runs.

The stack has the real diffusers classes at toy sizes (transformer 2 heads x 12 dims, 3 layers,
VACE at layers 0 and 2; VAE base_dim 3; a 2-layer UMT5 of width 32; a Unigram tokenizer trained
in code). Its outputs are noise, but every code path of the real model runs through it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

TOKENIZER_CORPUS = [
    "anime style. a man boxing in a ring",
    "pixar style. a dog running on the beach",
    "clay style. a woman dancing in the rain",
    "lego style. a car driving down a city street at night",
    "vector style. a cat sleeping on a red sofa",
    "origami style. birds flying over a blue lake",
    "macaron style. children playing football in a park",
    "rick and morty style. two people talking in a kitchen",
    "3d chibi style. a girl riding a bicycle past trees",
    "bright tones, overexposed, static, blurred details, subtitles, worst quality, low quality",
    "ugly, incomplete, extra fingers, poorly drawn hands, poorly drawn faces, deformed, disfigured",
]


def build_tiny_tokenizer(vocab_size: int = 120):
    """A T5 tokenizer whose Unigram vocabulary is trained in code (deterministic, no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5Tokenizer

    specials = ["<pad>", "</s>", "<unk>"]
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>")
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(TOKENIZER_CORPUS * 4, trainer=trainer)
    pieces = tok.get_vocab()
    scores = dict(tok.model.get_vocab_scores()) if hasattr(tok.model, "get_vocab_scores") else {}
    if not scores:
        import json

        scores = dict(map(tuple, json.loads(tok.to_str())["model"]["vocab"]))
    learned = sorted(((p, float(scores.get(p, -10.0))) for p in pieces if p not in specials), key=lambda x: (-x[1], x[0]))
    vocab = [(s, 0.0) for s in specials] + learned
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def build_tiny_components(seed: int = 0) -> dict:
    """The components of a random tiny `WanVACEPipeline`, identical for a given seed."""
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanVACETransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    torch.manual_seed(seed)
    text_config = UMT5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
    )
    text_encoder = UMT5EncoderModel(text_config).eval()
    torch.manual_seed(seed)
    transformer = WanVACETransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=3,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        vace_layers=[0, 2],
        vace_in_channels=96,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


def save_tiny_model(path: str | os.PathLike, seed: int = 0, dtype: torch.dtype = torch.float32) -> Path:
    """Write a tiny random Wan2.1-VACE model as a diffusers folder at `path` and return it; with
    `dtype` bf16 or fp16 every weight is stored in it (the modules diffusers keeps in fp32 too)."""
    from diffusers import WanVACEPipeline
    from diffusers.utils import logging

    path = Path(path)
    components = build_tiny_components(seed)
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # diffusers warns that .to() casts its fp32 modules too: that is the point
    try:
        for name in ("transformer", "vae", "text_encoder"):
            components[name].to(dtype)
    finally:
        logging.set_verbosity(verbosity)
    WanVACEPipeline(**components).save_pretrained(path)
    return path


def build_tiny_clip(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random CLIP folder (transformers format) at `path` and return it: CLIPModel
    (width 32, 2 layers, 2 heads, 32x32 images in 8x8 patches, projection 16), a WordLevel
    tokenizer trained in code on TOKENIZER_CORPUS (<s> text </s>, at most 32 tokens) and a
    CLIPImageProcessor of size 32. For tests of the metrics only: its scores mean nothing."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        PreTrainedTokenizerFast,
    )

    path = Path(path)
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(TOKENIZER_CORPUS, trainer=trainers.WordLevelTrainer(vocab_size=100, special_tokens=specials))
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", bos), ("</s>", eos)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                        bos_token="<s>", eos_token="</s>", model_max_length=32)
    config = CLIPConfig(
        text_config={"vocab_size": max(100, tok.get_vocab_size()), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 32,
                     "pad_token_id": 0, "bos_token_id": bos, "eos_token_id": eos},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def build_tiny_dino(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random DINOv2 folder (transformers format) at `path` and return it: Dinov2Model
    (width 32, 2 layers, 2 heads, 32x32 images in 8x8 patches: 16 patch tokens) and a
    BitImageProcessor of size 32 with ImageNet normalisation. For tests of the metrics only."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    path = Path(path)
    config = Dinov2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                          image_size=32, patch_size=8)
    torch.manual_seed(seed)
    Dinov2Model(config).save_pretrained(path)
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_center_crop=True,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(path)
    return path
