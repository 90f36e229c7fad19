"""Training data for the style adapters: pairs of still images (a source photo and the same
photo in a style) with a caption, read from three layouts, checked, and turned into tensors.

Layouts (auto-detected by `load_pairs` / `scan_datasets`):

- v1: ``ROOT/unity/*`` sources, ``ROOT/<style>/*`` targets (every other subfolder), matched by
  sorted file order (natural order: "2.png" before "10.png"); ``ROOT/captions.json`` maps a source
  file name to its description; prompt = f"{style} style. {description}".
- v2: ``ROOT/<style>/src/*``, ``ROOT/<style>/tar/*``, ``ROOT/<style>/caption/*.txt`` matched by
  file stem; the txt holds the whole prompt.
- manifest: ``.jsonl`` (one object a line) or ``.csv`` (header row) with ``source``, ``target``,
  ``prompt`` and optional ``style``; paths relative to the manifest's folder (absolute allowed).

Loading collects problems (one line each, naming the file) instead of stopping at the first;
`scan_datasets` returns them in a `DatasetReport`, `load_pairs` / `load_datasets` raise one
`PickStyleError` when there are any. Images become float32 tensors [3, H, W] in [-1, 1].
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pickstyle.errors import PickStyleError, one_line
from pickstyle.files import image_files, natural_key
from pickstyle.settings import style_from_prompt, style_prompt

MANIFEST_EXTENSIONS = (".jsonl", ".csv")
REQUIRED_KEYS = ("source", "target", "prompt")
NOT_A_DATASET = ("not a dataset: expected unity/ + captions.json (v1), <style>/src + <style>/tar "
                 "(v2), or a .jsonl/.csv manifest")


@dataclass(frozen=True)
class Pair:
    """One training example: `source` photo, `target` (the photo in the style), the `prompt`,
    and `style`, a name for reports (folder name, manifest column, or the prompt's prefix)."""

    source: Path
    target: Path
    prompt: str
    style: str


@dataclass
class DatasetReport:
    """What loading and checking found: usable `pairs` (those with a problem are left out),
    `problems` (one line each, naming the file), `counts` (pairs per style, first-seen order)
    and `datasets` (how many dataset paths were scanned; 0 when not known)."""

    pairs: list[Pair] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    datasets: int = 0

    def summary(self) -> str:
        """A multi-line human report: the pairs per style, then every problem."""
        n = len(self.pairs)
        head = f"found {n} pair{'' if n == 1 else 's'}"
        if self.datasets:
            head += f" in {self.datasets} dataset{'' if self.datasets == 1 else 's'}"
        if self.counts:
            head += ": " + ", ".join(f"{style} {count}" for style, count in self.counts.items())
        lines = [head]
        if self.problems:
            k = len(self.problems)
            lines.append(f"{k} problem{'' if k == 1 else 's'}:")
            lines.extend(f"  - {p}" for p in self.problems)
        return "\n".join(lines)

    def raise_if_problems(self) -> None:
        """Raise a one-line PickStyleError (count and first problem) if any were found."""
        if self.problems:
            n = len(self.problems)
            first = " ".join(self.problems[0].split())
            raise PickStyleError(f"{n} problem{'' if n == 1 else 's'} in the training data, "
                                 f"first: {first}")


# ---------------------------------------------------------------- helpers


def _visible(p: Path) -> bool:
    return not p.name.startswith((".", "_"))


def _subfolders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and _visible(p)),
                  key=lambda p: natural_key(p.name))


def _counts(pairs: list[Pair]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pair in pairs:
        counts[pair.style] = counts.get(pair.style, 0) + 1
    return counts


def _as_list(paths) -> list:
    if isinstance(paths, (str, os.PathLike)):
        return [paths]
    return list(paths)


# ---------------------------------------------------------------- v1: unity/ + captions.json


def _load_v1(root: Path, problems: list[str]) -> list[Pair]:
    cap_file = root / "captions.json"
    try:
        captions = json.loads(cap_file.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        problems.append(f"{cap_file}: invalid JSON (line {err.lineno}: {err.msg})")
        return []
    except (OSError, UnicodeDecodeError) as err:
        problems.append(f"{cap_file}: cannot read ({one_line(err)})")
        return []
    if not isinstance(captions, dict):
        problems.append(f"{cap_file}: expected an object mapping source file names to descriptions")
        return []
    if not captions:
        problems.append(f"{cap_file}: empty (no captions)")
        return []

    sources = image_files(root / "unity")
    if not sources:
        problems.append(f"{root / 'unity'}: no images")
        return []
    descriptions: list[str | None] = []
    for src in sources:
        text = captions.get(src.name, captions.get(src.stem))
        if text is None:
            problems.append(f"{cap_file}: no caption for {src.name}")
        elif not isinstance(text, str):
            problems.append(f"{cap_file}: caption for {src.name} is not a string")
            text = None
        elif not text.strip():
            problems.append(f"{cap_file}: empty caption for {src.name}")
            text = None
        descriptions.append(text.strip() if text is not None else None)

    pairs = []
    for folder in _subfolders(root):
        if folder.name == "unity":
            continue
        style = folder.name
        targets = image_files(folder)
        if len(targets) != len(sources):
            problems.append(f"{folder}: {len(targets)} images but unity/ has {len(sources)} "
                            "(pairs by sorted order need equal counts)")
            continue
        for src, tar, desc in zip(sources, targets, descriptions):
            if desc is not None:
                pairs.append(Pair(src, tar, style_prompt(style, desc), style))
    return pairs


# ---------------------------------------------------------------- v2: <style>/src, tar, caption


def _by_stem(folder: Path, problems: list[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in image_files(folder):
        if p.stem in found:
            problems.append(f"{p}: same stem as {found[p.stem]} (pairs match by file stem)")
        else:
            found[p.stem] = p
    return found


def _is_v2_style(folder: Path) -> bool:
    return (folder / "src").is_dir() and (folder / "tar").is_dir()


def _load_v2(root: Path, problems: list[str]) -> list[Pair]:
    pairs = []
    for folder in _subfolders(root):
        if not _is_v2_style(folder):
            problems.append(f"{folder}: no src/ and tar/ folders (not a v2 style folder, skipped)")
            continue
        style = folder.name
        srcs = _by_stem(folder / "src", problems)
        tars = _by_stem(folder / "tar", problems)
        cap_dir = folder / "caption"
        has_captions = cap_dir.is_dir()
        if not has_captions:
            problems.append(f"{cap_dir}: missing folder (v2 needs caption/<name>.txt per pair)")
        for stem, tar in tars.items():
            if stem not in srcs:
                problems.append(f"{folder / 'src' / (stem + tar.suffix)}: missing partner of {tar}")
        for stem, src in srcs.items():
            tar = tars.get(stem)
            if tar is None:
                problems.append(f"{folder / 'tar' / (stem + src.suffix)}: missing partner of {src}")
                continue
            if not has_captions:
                continue
            txt = cap_dir / f"{stem}.txt"
            try:
                prompt = txt.read_text(encoding="utf-8-sig").strip()
            except FileNotFoundError:
                problems.append(f"{txt}: missing caption for {src}")
                continue
            except (OSError, UnicodeDecodeError) as err:
                problems.append(f"{txt}: cannot read ({one_line(err)})")
                continue
            if not prompt:
                problems.append(f"{txt}: empty prompt")
                continue
            pairs.append(Pair(src, tar, prompt, style))
    return pairs


# ---------------------------------------------------------------- manifests


def _manifest_row(manifest: Path, where: str, row, problems: list[str]) -> Pair | None:
    """One manifest record -> Pair, or None with a problem recorded."""
    if not isinstance(row, dict):
        problems.append(f"{where}: expected a JSON object")
        return None
    values = {}
    for key in REQUIRED_KEYS:
        value = row.get(key)
        if value is None:
            problems.append(f"{where}: missing key {key!r}")
            return None
        if not isinstance(value, str):
            problems.append(f"{where}: {key!r} must be a string")
            return None
        values[key] = value.strip()
    if not values["prompt"]:
        problems.append(f"{where}: empty prompt")
        return None
    paths = {}
    for key in ("source", "target"):
        if not values[key]:
            problems.append(f"{where}: empty {key!r}")
            return None
        p = Path(values[key]).expanduser()
        p = p if p.is_absolute() else manifest.parent / p
        if not p.is_file():
            problems.append(f"{where}: {key} file not found: {p}")
            return None
        paths[key] = p
    style = row.get("style")
    style = style.strip() if isinstance(style, str) else ""
    return Pair(paths["source"], paths["target"], values["prompt"],
                style or style_from_prompt(values["prompt"]))


def _load_manifest(manifest: Path, problems: list[str]) -> list[Pair]:
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        problems.append(f"{manifest}: cannot read ({one_line(err)})")
        return []
    pairs = []
    if manifest.suffix.lower() == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{manifest}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                problems.append(f"{where}: invalid JSON ({err.msg} at column {err.colno})")
                continue
            pair = _manifest_row(manifest, where, row, problems)
            if pair is not None:
                pairs.append(pair)
        return pairs

    reader = csv.DictReader(io.StringIO(text))
    try:
        header = reader.fieldnames
        if not header:
            problems.append(f"{manifest}: empty (expected a header row with source, target, prompt)")
            return []
        reader.fieldnames = [h.strip() if isinstance(h, str) else h for h in header]
        missing = [k for k in REQUIRED_KEYS if k not in reader.fieldnames]
        if missing:
            problems.append(f"{manifest}: missing column{'s' if len(missing) > 1 else ''} "
                            + ", ".join(repr(k) for k in missing))
            return []
        for row in reader:
            if not any((v or "").strip() for k, v in row.items() if isinstance(v, str)):
                continue  # blank line
            pair = _manifest_row(manifest, f"{manifest}:{reader.line_num}", row, problems)
            if pair is not None:
                pairs.append(pair)
    except csv.Error as err:
        problems.append(f"{manifest}:{reader.line_num}: bad CSV ({one_line(err)})")
    return pairs


# ---------------------------------------------------------------- detection and loading


def _scan_one(path, problems: list[str]) -> list[Pair]:
    """Pairs of one dataset path (folder or manifest), problems appended to `problems`."""
    path = Path(path).expanduser()
    if not path.exists():
        problems.append(f"{path}: no such file or folder")
        return []
    found = len(problems)
    try:
        if path.is_file():
            if path.suffix.lower() not in MANIFEST_EXTENSIONS:
                problems.append(f"{path}: {NOT_A_DATASET}")
                return []
            pairs = _load_manifest(path, problems)
        elif (path / "unity").is_dir() and (path / "captions.json").is_file():
            pairs = _load_v1(path, problems)
        elif any(_is_v2_style(p) for p in _subfolders(path)):
            pairs = _load_v2(path, problems)
        elif (path / "unity").is_dir():
            problems.append(f"{path}: not a dataset: has unity/ but no captions.json (v1 needs both)")
            return []
        else:
            problems.append(f"{path}: {NOT_A_DATASET}")
            return []
    except OSError as err:  # a folder that cannot be listed, and the like
        problems.append(f"{getattr(err, 'filename', None) or path}: cannot read ({one_line(err)})")
        return []
    if not pairs and len(problems) == found:
        problems.append(f"{path}: dataset has no pairs")
    elif not pairs:
        problems.append(f"{path}: no usable pairs (see the problems above)")
    return pairs


def _image_problem(path: Path) -> str | None:
    """None if Pillow can decode `path` (JPEGs at reduced size), else a one-line reason."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.draft("RGB", (64, 64))
            im.load()
    except UnidentifiedImageError:
        return "cannot identify image file"
    except Exception as err:  # noqa: BLE001 - any decoder failure means unusable
        return one_line(err)
    return None


def validate_pairs(pairs, check_images: bool = True) -> DatasetReport:
    """Check pairs before training: both files exist, the prompt is not empty and, with
    `check_images`, every image decodes (each file once). Pairs with a problem are left out."""
    problems: list[str] = []
    checked: dict[Path, str | None] = {}
    good = []
    for pair in pairs:
        ok = True
        for p in (pair.source, pair.target):
            p = Path(p)
            if p not in checked:
                if not p.is_file():
                    checked[p] = "no such file"
                    problems.append(f"{p}: no such file")
                elif check_images:
                    reason = _image_problem(p)
                    checked[p] = reason
                    if reason:
                        problems.append(f"{p}: unreadable image ({reason})")
                else:
                    checked[p] = None
            ok = ok and checked[p] is None
        if not pair.prompt.strip():
            problems.append(f"{pair.source}: empty prompt (pair with {pair.target})")
            ok = False
        if ok:
            good.append(pair)
    return DatasetReport(pairs=good, problems=problems, counts=_counts(good))


def scan_datasets(paths, check_images: bool = True) -> DatasetReport:
    """Load every dataset path (folders or manifests, joined in order) and validate the pairs;
    never raises for bad data, everything found is in the report's `problems`."""
    paths = _as_list(paths)
    problems: list[str] = []
    pairs: list[Pair] = []
    if not paths:
        problems.append("no dataset paths given")
    for path in paths:
        pairs.extend(_scan_one(path, problems))
    report = validate_pairs(pairs, check_images=check_images)
    report.problems[:0] = problems
    report.datasets = len(paths)
    return report


def load_datasets(paths, check_images: bool = False) -> list[Pair]:
    """Pairs of several datasets joined in the given order; one PickStyleError if any problem."""
    report = scan_datasets(paths, check_images=check_images)
    report.raise_if_problems()
    return report.pairs


def load_pairs(path, check_images: bool = False) -> list[Pair]:
    """Pairs of one dataset (folder of layout v1 / v2, or a .jsonl / .csv manifest);
    one PickStyleError if any problem."""
    return load_datasets([path], check_images=check_images)


# ---------------------------------------------------------------- tensors


def load_image(path, height: int, width: int):
    """float32 tensor [3, height, width] in [-1, 1]: the image (EXIF rotation applied, converted
    to RGB, alpha dropped) resized to cover (bicubic, antialiased, clamped to [0, 1]) and centre
    cropped. An image already of that size is not resampled (x / 255 * 2 - 1 exactly)."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps, UnidentifiedImageError

    from pickstyle.video.frames import check_size, cover_and_crop

    check_size(height, width)
    path = Path(path)
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise PickStyleError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise PickStyleError(f"{path}: unreadable image (cannot identify image file)") from None
    except Exception as err:  # noqa: BLE001
        raise PickStyleError(f"{path}: unreadable image ({one_line(err)})") from None
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)  # [3, h, w] in [0, 1]
    x = cover_and_crop(x[None], height, width)[0]
    return (x * 2.0 - 1.0).contiguous()


def load_image_pair(pair: Pair, height: int, width: int):
    """(source, target): float32 tensors [3, height, width] in [-1, 1] (see `load_image`)."""
    return load_image(pair.source, height, width), load_image(pair.target, height, width)
