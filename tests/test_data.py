"""Tests for pickstyle.train.data: the three dataset layouts, problem reports, and image tensors.

Every image is tiny and a solid colour that encodes (index, kind), so a test can tell which
source went with which target after loading.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pickstyle.errors import PickStyleError
from pickstyle.settings import style_from_prompt
from pickstyle.train.data import (
    NOT_A_DATASET,
    DatasetReport,
    Pair,
    load_datasets,
    load_image,
    load_image_pair,
    load_pairs,
    scan_datasets,
    validate_pairs,
)

SIZE = (20, 12)  # (width, height) of the test images


def colour(index: int, kind: int) -> tuple[int, int, int]:
    """A solid colour encoding the pair index and the kind (0 = source, 1.. = a style)."""
    return (10 + 20 * index, 40 * kind, 200)


def save(path: Path, rgb=(0, 0, 0), size=SIZE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)
    return path


def pixel(path: Path) -> tuple[int, int, int]:
    with Image.open(path) as im:
        return im.convert("RGB").getpixel((0, 0))


def decode(path: Path) -> tuple[int, int]:
    """(index, kind) of an image made with `colour`."""
    r, g, _ = pixel(path)
    return (r - 10) // 20, g // 40


# ------------------------------------------------------------------ dataset builders


def make_v1(root: Path, styles=("anime", "pixar"), n=3) -> Path:
    """v1 with sources named 1, 2, 10 (natural order) and targets named differently."""
    names = [f"{i}.png" for i in (1, 2, 10)][:n]
    for i, name in enumerate(names):
        save(root / "unity" / name, colour(i, 0))
    for k, style in enumerate(styles, 1):
        for i in range(n):
            save(root / style / f"{style}_{i + 1:03d}.png", colour(i, k))
    captions = {name: f"  a photo number {i}\n" for i, name in enumerate(names)}
    (root / "captions.json").write_text(json.dumps(captions))
    return root


def make_v2(root: Path, styles=("LEGO", "Clay_Toy"), stems=("0001", "0002", "0003")) -> Path:
    for k, style in enumerate(styles, 1):
        for i, stem in enumerate(stems):
            ext = ".jpg" if (i == 1 and k == 1) else ".png"
            save(root / style / "src" / f"{stem}.png", colour(i, 0))
            save(root / style / "tar" / f"{stem}{ext}", colour(i, k))
            (root / style / "caption").mkdir(parents=True, exist_ok=True)
            (root / style / "caption" / f"{stem}.txt").write_text(f"\n{style} style. item {i}\n\n")
    return root


def problems_of(path, **kw) -> list[str]:
    return scan_datasets([path], **kw).problems


def has(problems: list[str], *parts: str) -> bool:
    return any(all(part in p for part in parts) for p in problems)


# ------------------------------------------------------------------ layouts


def test_v1_pairs_by_natural_sorted_order_with_prompts(tmp_path):
    root = make_v1(tmp_path / "v1")
    report = scan_datasets([root])
    assert report.problems == []
    assert len(report.pairs) == 6
    assert report.counts == {"anime": 3, "pixar": 3}
    for pair in report.pairs:
        k = ("anime", "pixar").index(pair.style) + 1
        i_src, kind_src = decode(pair.source)
        assert kind_src == 0 and pair.source.parent.name == "unity"
        assert decode(pair.target) == (i_src, k)
        assert pair.prompt == f"{pair.style} style. a photo number {i_src}"
    # natural order: 1.png, 2.png, 10.png pair with _001, _002, _003
    anime = [p for p in report.pairs if p.style == "anime"]
    assert [p.source.name for p in anime] == ["1.png", "2.png", "10.png"]
    assert [p.target.name for p in anime] == ["anime_001.png", "anime_002.png", "anime_003.png"]
    assert load_pairs(root) == report.pairs
    assert all(isinstance(p, Pair) and isinstance(p.source, Path) for p in report.pairs)


def test_v1_accepts_other_extensions_and_skips_hidden_files(tmp_path):
    root = tmp_path / "v1"
    save(root / "unity" / "a.jpg", colour(0, 0))
    save(root / "unity" / "b.webp", colour(1, 0))
    save(root / "clay" / "a.jpeg", colour(0, 1))
    save(root / "clay" / "b.png", colour(1, 1))
    (root / "unity" / "._a.jpg").write_bytes(b"mac resource fork")
    (root / "clay" / ".DS_Store").write_bytes(b"junk")
    (root / "clay" / "notes.txt").write_text("not an image")
    (root / "captions.json").write_text(json.dumps({"a.jpg": "first", "b.webp": "second"}))
    pairs = load_pairs(root, check_images=True)
    assert [(p.source.name, p.target.name, p.prompt) for p in pairs] == [
        ("a.jpg", "a.jpeg", "clay style. first"), ("b.webp", "b.png", "clay style. second")]


def test_v2_pairs_by_stem_prompt_from_txt(tmp_path):
    root = make_v2(tmp_path / "v2")
    report = scan_datasets(root)  # a single path is accepted too
    assert report.problems == []
    assert report.counts == {"Clay_Toy": 3, "LEGO": 3}  # folders in sorted order
    for pair in report.pairs:
        k = ("LEGO", "Clay_Toy").index(pair.style) + 1
        assert pair.source.stem == pair.target.stem
        i, kind = decode(pair.source)
        assert kind == 0 and decode(pair.target) == (i, k)
        assert pair.prompt == f"{pair.style} style. item {i}"
    assert any(p.target.suffix == ".jpg" for p in report.pairs)


def test_manifest_jsonl_relative_absolute_and_styles(tmp_path):
    a = save(tmp_path / "imgs" / "a.png", colour(0, 0))
    b = save(tmp_path / "imgs" / "b.png", colour(0, 1))
    c = save(tmp_path / "elsewhere" / "c.png", colour(1, 0))
    rows = [
        {"source": "imgs/a.png", "target": "imgs/b.png", "prompt": "Anime style. A cat."},
        {"source": str(c.resolve()), "target": "imgs/b.png", "prompt": "A dog", "style": "ink"},
        {"source": "imgs/a.png", "target": "imgs/b.png", "prompt": "A dog drawn in a style."},
    ]
    manifest = tmp_path / "sub" / "m.jsonl"
    manifest.parent.mkdir()
    for row in rows:
        row["source"] = row["source"] if row["source"].startswith("/") else "../" + row["source"]
        row["target"] = "../" + row["target"]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    pairs = load_pairs(manifest)
    assert [p.prompt for p in pairs] == [r["prompt"] for r in rows]
    assert [p.style for p in pairs] == ["Anime", "ink", "unknown"]
    assert pairs[0].source.resolve() == a.resolve() and pairs[0].target.resolve() == b.resolve()
    assert pairs[1].source == c.resolve()


def test_manifest_csv(tmp_path):
    save(tmp_path / "s.png", colour(0, 0))
    save(tmp_path / "t.png", colour(0, 1))
    manifest = tmp_path / "m.csv"
    manifest.write_text('source,target,prompt,style\n'
                        's.png,t.png,"clay style. A cat, sitting",\n'
                        's.png,t.png,plain prompt,Origami\n')
    pairs = load_pairs(manifest)
    assert pairs == [
        Pair(tmp_path / "s.png", tmp_path / "t.png", "clay style. A cat, sitting", "clay"),
        Pair(tmp_path / "s.png", tmp_path / "t.png", "plain prompt", "Origami"),
    ]


def test_several_datasets_joined_in_order_with_summary(tmp_path):
    v1 = make_v1(tmp_path / "v1", styles=("anime",))
    v2 = make_v2(tmp_path / "v2", styles=("LEGO",))
    report = scan_datasets([v2, str(v1)])
    assert [p.style for p in report.pairs] == ["LEGO"] * 3 + ["anime"] * 3
    assert report.counts == {"LEGO": 3, "anime": 3}
    assert report.summary() == "found 6 pairs in 2 datasets: LEGO 3, anime 3"
    assert load_datasets([v2, v1]) == report.pairs
    report.raise_if_problems()  # nothing to raise


def test_style_from_prompt():
    assert style_from_prompt("3D Chibi style. A girl") == "3D Chibi"
    assert style_from_prompt("A girl. In anime style.") == "unknown"
    assert style_from_prompt("A girl") == "unknown"
    assert style_from_prompt(" style. A girl") == "unknown"
    assert style_from_prompt("A dog drawn in a style.") == "unknown"  # not a short name


# ------------------------------------------------------------------ problems


def test_v2_missing_partners_and_captions(tmp_path):
    root = make_v2(tmp_path / "v2", styles=("LEGO",), stems=("0001", "0002", "0003", "0004"))
    lego = root / "LEGO"
    (lego / "tar" / "0003.png").unlink()
    (lego / "src" / "0004.png").unlink()
    (lego / "caption" / "0001.txt").unlink()
    (lego / "caption" / "0002.txt").write_text("  \n")
    report = scan_datasets([root])
    probs = report.problems
    assert f"{lego / 'tar' / '0003.png'}: missing partner of {lego / 'src' / '0003.png'}" in probs
    assert f"{lego / 'src' / '0004.png'}: missing partner of {lego / 'tar' / '0004.png'}" in probs
    assert has(probs, str(lego / "caption" / "0001.txt"), "missing caption")
    assert f"{lego / 'caption' / '0002.txt'}: empty prompt" in probs
    assert len(probs) == 5 and report.pairs == []
    assert probs[-1] == f"{root}: no usable pairs (see the problems above)"
    assert all("\n" not in p for p in probs)


def test_v2_missing_caption_folder_and_strays(tmp_path):
    root = make_v2(tmp_path / "v2", styles=("LEGO", "Vector"))
    for txt in (root / "Vector" / "caption").iterdir():
        txt.unlink()
    (root / "Vector" / "caption").rmdir()
    (root / "Macaron" / "source").mkdir(parents=True)
    (root / "Origami" / "src").mkdir(parents=True)
    report = scan_datasets([root])
    assert report.counts == {"LEGO": 3}
    assert has(report.problems, str(root / "Vector" / "caption"), "missing folder")
    assert has(report.problems, str(root / "Macaron"), "no src/ and tar/")
    assert has(report.problems, str(root / "Origami"), "no src/ and tar/")


def test_v1_missing_caption_and_count_mismatch(tmp_path):
    root = make_v1(tmp_path / "v1")
    captions = json.loads((root / "captions.json").read_text())
    del captions["2.png"]
    (root / "captions.json").write_text(json.dumps(captions))
    (root / "pixar" / "pixar_003.png").unlink()
    report = scan_datasets([root])
    assert report.problems == [
        f"{root / 'captions.json'}: no caption for 2.png",
        f"{root / 'pixar'}: 2 images but unity/ has 3 (pairs by sorted order need equal counts)",
    ]
    assert [(p.style, p.source.name) for p in report.pairs] == [("anime", "1.png"), ("anime", "10.png")]
    assert report.counts == {"anime": 2}


@pytest.mark.parametrize("text, expected", [
    ("{}", "empty"),
    ("{not json", "invalid JSON"),
    ('["a"]', "expected an object"),
    ('{"1.png": "", "2.png": 3, "10.png": "ok"}', "empty caption for 1.png"),
])
def test_v1_bad_captions_json(tmp_path, text, expected):
    root = make_v1(tmp_path / "v1")
    (root / "captions.json").write_text(text)
    probs = problems_of(root)
    assert probs[0].startswith(f"{root / 'captions.json'}: ") and expected in probs[0]


def test_unreadable_images_reported_once_and_pairs_dropped(tmp_path):
    root = make_v1(tmp_path / "v1")
    bad = root / "unity" / "1.png"
    bad.write_bytes(b"this is not an image")
    truncated = root / "anime" / "anime_002.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    report = scan_datasets([root])
    assert f"{bad}: unreadable image (cannot identify image file)" in report.problems
    assert has(report.problems, f"{truncated}: unreadable image (")
    assert len(report.problems) == 2  # the bad source is checked once for both styles
    assert len(report.pairs) == 3
    assert all(p.source != bad and p.target != truncated for p in report.pairs)
    # without the image check, the structure is fine
    assert scan_datasets([root], check_images=False).problems == []


def test_manifest_problems_with_line_numbers(tmp_path):
    save(tmp_path / "s.png")
    save(tmp_path / "t.png")
    m = tmp_path / "m.jsonl"
    good = {"source": "s.png", "target": "t.png", "prompt": "p"}
    m.write_text("\n".join([
        json.dumps(good),
        "",
        "{bad json",
        json.dumps({"source": "s.png", "target": "t.png"}),
        json.dumps({**good, "target": "missing.png"}),
        json.dumps({**good, "prompt": "   "}),
        json.dumps(["a list"]),
        json.dumps({**good, "source": 5}),
    ]))
    report = scan_datasets([m])
    probs = report.problems
    assert has(probs, f"{m}:3: invalid JSON")
    assert f"{m}:4: missing key 'prompt'" in probs
    assert f"{m}:5: target file not found: {tmp_path / 'missing.png'}" in probs
    assert f"{m}:6: empty prompt" in probs
    assert f"{m}:7: expected a JSON object" in probs
    assert f"{m}:8: 'source' must be a string" in probs
    assert len(probs) == 6 and len(report.pairs) == 1


def test_csv_manifest_problems(tmp_path):
    save(tmp_path / "s.png")
    m = tmp_path / "m.csv"
    m.write_text("source,target\ns.png,s.png\n")
    assert problems_of(m) == [f"{m}: missing column 'prompt'", f"{m}: no usable pairs (see the problems above)"]
    m.write_text("source,target,prompt\ns.png,nope.png,x\ns.png\n")
    probs = problems_of(m)
    assert f"{m}:2: target file not found: {tmp_path / 'nope.png'}" in probs
    assert f"{m}:3: missing key 'target'" in probs
    m.write_text("")
    assert has(problems_of(m), f"{m}: empty")


def test_paths_that_are_not_datasets(tmp_path):
    missing = tmp_path / "nope"
    assert problems_of(missing) == [f"{missing}: no such file or folder"]
    plain = tmp_path / "plain"
    save(plain / "x.png")
    assert problems_of(plain) == [f"{plain}: {NOT_A_DATASET}"]
    txt = tmp_path / "list.txt"
    txt.write_text("a b c")
    assert problems_of(txt) == [f"{txt}: {NOT_A_DATASET}"]
    half = tmp_path / "half"
    save(half / "unity" / "x.png")
    assert has(problems_of(half), str(half), "no captions.json")
    empty = tmp_path / "empty"
    (empty / "unity").mkdir(parents=True)
    (empty / "captions.json").write_text('{"x.png": "a"}')
    assert problems_of(empty) == [f"{empty / 'unity'}: no images",
                                  f"{empty}: no usable pairs (see the problems above)"]
    m = tmp_path / "m.jsonl"
    m.write_text("\n\n")
    assert problems_of(m) == [f"{m}: dataset has no pairs"]
    assert scan_datasets([]).problems == ["no dataset paths given"]


def test_raise_if_problems_one_line_with_count(tmp_path):
    good = make_v1(tmp_path / "v1", styles=("anime",))
    missing = tmp_path / "missing"
    plain = tmp_path / "plain"
    plain.mkdir()
    report = scan_datasets([good, missing, plain])
    assert len(report.pairs) == 3 and len(report.problems) == 2
    summary = report.summary().splitlines()
    assert summary[0] == "found 3 pairs in 3 datasets: anime 3"
    assert summary[1] == "2 problems:" and summary[2] == f"  - {missing}: no such file or folder"
    with pytest.raises(PickStyleError) as info:
        report.raise_if_problems()
    msg = str(info.value)
    assert "\n" not in msg
    assert msg == f"2 problems in the training data, first: {missing}: no such file or folder"
    with pytest.raises(PickStyleError, match=r"^1 problem in the training data, first: .*nope"):
        load_pairs(tmp_path / "nope")
    with pytest.raises(PickStyleError, match="2 problems"):
        load_datasets([good, missing, plain])


def test_validate_pairs_directly(tmp_path):
    s = save(tmp_path / "s.png")
    t = save(tmp_path / "t.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    pairs = [Pair(s, t, "ok", "a"), Pair(s, tmp_path / "gone.png", "ok", "a"),
             Pair(s, t, "  ", "b"), Pair(bad, t, "ok", "c")]
    report = validate_pairs(pairs)
    assert isinstance(report, DatasetReport)
    assert report.pairs == pairs[:1] and report.counts == {"a": 1}
    assert report.problems == [f"{tmp_path / 'gone.png'}: no such file",
                               f"{s}: empty prompt (pair with {t})",
                               f"{bad}: unreadable image (cannot identify image file)"]
    assert len(validate_pairs(pairs, check_images=False).problems) == 2
    assert validate_pairs([]).summary() == "found 0 pairs"


# ------------------------------------------------------------------ image tensors


def thirds(path: Path, width: int, height: int, vertical: bool = False) -> Path:
    """Red / green / blue thirds, left to right (or top to bottom when `vertical`)."""
    a = np.zeros((height, width, 3), np.uint8)
    n = height if vertical else width
    for k in range(3):
        sl = slice(k * n // 3, (k + 1) * n // 3)
        if vertical:
            a[sl, :, k] = 255
        else:
            a[:, sl, k] = 255
    Image.fromarray(a).save(path)
    return path


def to01(x: torch.Tensor) -> torch.Tensor:
    return (x + 1) / 2


@pytest.mark.parametrize("size, hw", [((60, 20), (16, 16)), ((12, 4), (24, 24)), ((90, 30), (10, 10))])
def test_cover_and_centre_crop_wide(tmp_path, size, hw):
    """A 3:1 image of thirds cropped to a square keeps just the green middle third."""
    path = thirds(tmp_path / "wide.png", *size)
    pair = Pair(path, path, "p", "s")
    src, tar = load_image_pair(pair, *hw)
    assert src.shape == (3, *hw) and src.dtype == torch.float32
    assert torch.equal(src, tar)
    assert src.min() >= -1 and src.max() <= 1
    x = to01(src)
    centre = x[:, :, hw[1] // 2]
    assert torch.allclose(centre, torch.tensor([0.0, 1.0, 0.0])[:, None], atol=0.02)
    # cropped, not squashed: the edges are mostly green, never pure red / blue
    assert x[0, :, 0].max() < 0.6 and x[1, :, 0].min() > 0.4
    assert x[2, :, -1].max() < 0.6 and x[1, :, -1].min() > 0.4


def test_cover_wide_to_less_wide(tmp_path):
    """90x30 -> 20x12 (scale 0.4 to 36x12): the crop keeps source columns 20..70."""
    x = to01(load_image(thirds(tmp_path / "wide.png", 90, 30), 12, 20))
    assert x[0, :, 0].min() > 0.9 and x[2, :, -1].min() > 0.9
    assert torch.allclose(x[:, :, 10], torch.tensor([0.0, 1.0, 0.0])[:, None], atol=0.02)


def test_cover_and_centre_crop_portrait(tmp_path):
    path = thirds(tmp_path / "tall.png", 20, 60, vertical=True)
    x = to01(load_image(path, 16, 16))
    assert x.shape == (3, 16, 16)
    assert torch.allclose(x[:, 8, :], torch.tensor([0.0, 1.0, 0.0])[:, None], atol=0.02)
    assert x[0, 0, :].max() < 0.6 and x[2, -1, :].max() < 0.6
    # the full height kept when the target is as tall relative to its width: 60x20 -> 30x10
    y = to01(load_image(path, 30, 10))
    assert y[0, 0].min() > 0.9 and y[2, -1].min() > 0.9 and y[1, 15].min() > 0.9


def test_exact_values_without_resize(tmp_path):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png", 12, 20)
    expected = torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0 * 2.0 - 1.0
    assert x.dtype == torch.float32 and x.is_contiguous()
    assert torch.equal(x, expected)
    assert x.min() == expected.min() and x.max() <= 1.0


def test_colour_modes_and_errors(tmp_path):
    rgba = np.zeros((12, 20, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 0  # fully transparent red: alpha is dropped
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    x = load_image(tmp_path / "rgba.png", 12, 20)
    assert torch.equal(x[0], torch.ones(12, 20)) and torch.equal(x[1], -torch.ones(12, 20))
    Image.new("L", (20, 12), 128).save(tmp_path / "grey.png")
    g = load_image(tmp_path / "grey.png", 12, 20)
    assert g.shape == (3, 12, 20) and torch.equal(g[0], g[2])
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(PickStyleError, match=r"bad\.png: unreadable image"):
        load_image(tmp_path / "bad.png", 8, 8)
    with pytest.raises(PickStyleError, match=r"gone\.png: no such file"):
        load_image(tmp_path / "gone.png", 8, 8)
    with pytest.raises(PickStyleError, match="height=0"):
        load_image(tmp_path / "grey.png", 0, 8)
