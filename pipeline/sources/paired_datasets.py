"""Real paired moiré datasets in their published folder layouts: find (moiré, clean) file pairs.

Layouts, as the authors' own loaders read them (ESDNet's `dataset/load_data.py` covers all three):

- `uhdm` (Yu et al., ECCV 2022): `<root>/{train,test}/**/NNNN_moire.jpg` beside `NNNN_gt.jpg`; the
  train split is spread over per-capture subfolders, so the search is recursive.
- `fhdmi` (He et al., ECCV 2020): `<root>/{train,test}/source/src_NNNNN.png` with
  `<root>/{train,test}/target/tar_NNNNN.png`.
- `tip2018` (Sun et al., TIP 2018): `<root>/{trainData,testData}/source/NAME_source.png` with
  `.../target/NAME_target.png`. The images keep their black marker border; nothing is cropped here.
- `generic`: `<root>/moire/NAME` with `<root>/clean/NAME` (the same file name).

Where the published material is ambiguous both variants are accepted: split folders match
case-insensitively and with or without a `Data` suffix (ESDNet's configs say `uhdm_data/Train`, the
UHDM archives unpack to `train`, TIP2018 uses `trainData`), and TIP2018 names match with or without
the underscore before `source`/`target`. A root that is itself one split folder (`FHDMi/test`, or
UHDM's `test_origin`) is read as that split, or as an unnamed one when its name is no split name.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from pipeline.errors import InputDataError, ParamsError
from pipeline.io import NOT_UTF8_NAME, is_utf8_name, readable_text
from pipeline.sources.folders import IMAGE_SUFFIXES, image_files

# Folder names (lower case) that hold each of our splits inside a dataset root.
SPLIT_FOLDERS = {
    "train": ("train", "traindata"),
    "val": ("val", "valdata", "validation"),
    "test": ("test", "testdata"),
}


@dataclass(frozen=True)
class DatasetLayout:
    """How one published dataset names its folders and pairs its files."""

    name: str
    shape: str  # the layout as shown to users in messages
    moire_dir: str  # folder of moiré images inside a split folder; "" = the split folder itself
    clean_dir: str
    moire_file: re.Pattern[str]  # full match on a moiré file name; group `key` names the pair
    clean_file: str  # the clean partner's file name, formatted from the match's groups
    recursive: bool = False  # UHDM nests its pairs in per-capture subfolders


# Checked in this order by `auto`: the most specific folder structure first, UHDM's recursive
# search for `*_moire.*` last so it cannot claim a generic or FHDMi root.
LAYOUTS = (
    DatasetLayout("generic", "<root>/moire/NAME + <root>/clean/NAME",
                  "moire", "clean", re.compile(r"(?P<key>.+)"), "{key}"),
    DatasetLayout("fhdmi", "<root>/{train,test}/source/src_N.png + .../target/tar_N.png",
                  "source", "target", re.compile(r"src_(?P<key>.+)(?P<ext>\.\w+)"), "tar_{key}{ext}"),
    DatasetLayout("tip2018", "<root>/{trainData,testData}/source/NAME_source.png + .../target/NAME_target.png",
                  "source", "target", re.compile(r"(?P<key>.+?)(?P<sep>_?)source(?P<ext>\.\w+)"),
                  "{key}{sep}target{ext}"),
    DatasetLayout("uhdm", "<root>/{train,test}/**/NNNN_moire.jpg + NNNN_gt.jpg",
                  "", "", re.compile(r"(?P<key>.+)_moire(?P<ext>\.\w+)"), "{key}_gt{ext}", recursive=True),
)
DATASET_LAYOUTS = ("uhdm", "fhdmi", "tip2018", "generic")
_BY_NAME = {layout.name: layout for layout in LAYOUTS}


@dataclass(frozen=True)
class DatasetPair:
    """One (moiré, clean) file pair; `name` is unique within its dataset root."""

    name: str  # "<split>/<subfolders>/<key>", e.g. "train/pair_01/0001"
    split: str  # the dataset's split: "train", "val", "test", or "" for an unnamed root
    moire_path: Path
    clean_path: Path


@dataclass(frozen=True)
class SkippedPair:
    """A moiré file that could not be paired or read, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class PairList:
    """The pairs found under a dataset root, the layout they were found in, and what was skipped."""

    layout: str
    pairs: list[DatasetPair] = field(default_factory=list)
    skipped: list[SkippedPair] = field(default_factory=list)


def find_pairs(root: Path, layout: str = "auto", split: str | None = None) -> PairList:
    """Every (moiré, clean) pair under `root` in `layout` ("auto" detects it), optionally one split only."""
    root = Path(root)
    if layout != "auto" and layout not in _BY_NAME:
        raise ParamsError(f"layout {layout!r} is not one of: auto, {', '.join(DATASET_LAYOUTS)}")
    if split is not None and split not in SPLIT_FOLDERS:
        raise ParamsError(f"split {split!r} is not one of: {', '.join(SPLIT_FOLDERS)}")
    if root.exists() and not root.is_dir():
        raise InputDataError(f"{root} is a file, not a dataset folder: name the folder holding the pairs")
    if not root.is_dir():
        raise InputDataError(f"dataset folder not found: {root}")
    chosen = detect_layout(root) if layout == "auto" else _BY_NAME[layout]
    splits = layout_splits(root, chosen)
    if not splits:
        if _has_folders_only(root, chosen):
            raise InputDataError(_no_images(root, chosen))
        raise InputDataError(f"{root} is not in the {chosen.name} layout ({chosen.shape})")
    if split is not None:
        if split not in splits:
            found = ", ".join(s or "(the root itself, unnamed)" for s in splits)
            raise InputDataError(f"{root} has no {split} split in the {chosen.name} layout; found: {found}")
        splits = {split: splits[split]}
    result = PairList(layout=chosen.name)
    for split_name, folder in splits.items():
        pairs, skipped = pair_split_folder(folder, chosen, split_name)
        # a name in another encoding is said once, readably, and left out
        result.pairs.extend(pair for pair in pairs if is_utf8_name(pair.name))
        result.skipped.extend(SkippedPair(pair.name, NOT_UTF8_NAME) for pair in pairs if not is_utf8_name(pair.name))
        result.skipped.extend(skipped)
    result.skipped[:] = [SkippedPair(readable_text(item.name), readable_text(item.reason)) for item in result.skipped]
    return result


def detect_layout(root: Path) -> DatasetLayout:
    """The first layout whose structure `root` holds; InputDataError listing every layout if none."""
    for layout in LAYOUTS:
        if layout_splits(root, layout):
            return layout
    empty = next((layout for layout in LAYOUTS if _has_folders_only(root, layout)), None)
    if empty is not None:
        raise InputDataError(_no_images(root, empty))
    shapes = "; ".join(f"{layout.name}: {layout.shape}" for layout in sorted(LAYOUTS, key=_listing_order))
    raise InputDataError(f"{root} matches no known paired-dataset layout; expected one of {shapes}")


def _has_folders_only(root: Path, layout: DatasetLayout) -> bool:
    """Whether `root` (or one of its split folders) has the layout's own moiré and clean folders, holding no pair."""
    if not layout.moire_dir:  # a layout of file names alone: any folder would have its folders
        return False
    folders = [root, *split_folders(root).values()]
    return any((f / layout.moire_dir).is_dir() and (f / layout.clean_dir).is_dir() for f in folders)


def _no_images(root: Path, layout: DatasetLayout) -> str:
    """The error for a root with a layout's folders and no moiré image named its way in them."""
    return (f"{root} has the {layout.name} layout's folders but no moiré image in them named as it names them "
            f"({layout.shape})")


def layout_splits(root: Path, layout: DatasetLayout) -> dict[str, Path]:
    """Split name → folder for each split folder of `root` that holds `layout`; else `root` itself."""
    splits = {name: folder for name, folder in split_folders(root).items() if _holds(folder, layout)}
    if not splits and _holds(root, layout):
        splits = {_split_named(root.name) or "": root}
    return splits


def split_folders(root: Path) -> dict[str, Path]:
    """Our split name → the sub-folder of `root` that holds it, in train, val, test order."""
    by_split = {_split_named(child.name): child for child in sorted(root.iterdir()) if child.is_dir()}
    return {split: by_split[split] for split in SPLIT_FOLDERS if split in by_split}


def pair_split_folder(folder: Path, layout: DatasetLayout, split: str) -> tuple[list[DatasetPair], list[SkippedPair]]:
    """Pair every moiré file of one split folder with its clean partner; moiré files without one, a second
    file under a pair's name, files the layout does not read (in subfolders) and clean files no moiré file
    names are skipped."""
    moire_root, clean_root = folder / layout.moire_dir, folder / layout.clean_dir
    pairs: list[DatasetPair] = []
    skipped: list[SkippedPair] = []
    taken: dict[str, Path] = {}  # pair name (NFC: see _partner) → the moiré file that has it
    named_clean: set[Path] = set()  # clean files some moiré file names as its partner
    moire_files: set[Path] = set()
    listings: dict[Path, dict[str, Path]] = {}  # folder → its entries by NFC name (see _partner)
    for moire_path, match in _moire_files(folder, layout):
        moire_files.add(moire_path)
        subfolder = moire_path.parent.relative_to(moire_root)
        name = _in_split(split, subfolder.as_posix(), match["key"])
        clean_path = _partner(clean_root / subfolder / layout.clean_file.format(**match.groupdict()), listings)
        named_clean.add(clean_path)
        key = unicodedata.normalize("NFC", name)  # café.png written composed and decomposed: one pair's name
        if key in taken:  # src_1.png beside src_1.jpg, or TIP2018's 1_source.png beside 1source.png
            skipped.append(SkippedPair(name, f"{_shown(moire_path, folder)} names the same pair as "
                                             f"{_shown(taken[key], folder)}, which is read; rename one"))
        elif _is_entry(clean_path):  # a link to nothing: skipped when read, with why
            taken[key] = moire_path
            pairs.append(DatasetPair(name, split, moire_path, clean_path))
        else:
            skipped.append(SkippedPair(name, f"no clean partner {_shown(clean_path, folder)}"))
    if not moire_files:
        return pairs, skipped
    if not layout.recursive:  # files the published layout never nests: not read, but said
        skipped += [SkippedPair(_in_split(split, _shown(path, folder)), f"in a subfolder of {layout.moire_dir}/, "
                                                                        f"which the {layout.name} layout does not read")
                    for path in image_files(moire_root) if path.parent != moire_root]
    cleans = image_files(clean_root) if layout.recursive else _listed(clean_root)
    shared = clean_root == moire_root  # UHDM: a moiré file that made no pair is said above already
    skipped += [SkippedPair(_in_split(split, _shown(path, folder)), "no moiré file names it as its clean partner")
                for path in cleans if path not in named_clean and path not in moire_files
                and not (shared and layout.moire_file.fullmatch(path.name))]
    return pairs, skipped


def _is_entry(path: Path) -> bool:
    """Whether `path` is a file or a link (a link to nothing too: reading it says why it fails)."""
    return path.is_file() or path.is_symlink()


def _partner(clean_path: Path, listings: dict[Path, dict[str, Path]]) -> Path:
    """The clean file at `clean_path`, or else the entry beside it whose name is the same text in another
    Unicode normal form; `clean_path` itself when there is neither.

    macOS writes names decomposed (NFD: "e" + a combining accent), Linux keeps what it is given, mostly
    composed (NFC), so a set whose moiré half was copied from a Mac and whose clean half was written here
    names its pairs with different bytes. Of several such entries (both forms beside a third, mixed one), the
    first by name. `listings` caches each folder's entries by NFC name.
    """
    if _is_entry(clean_path) or clean_path.name.isascii():
        return clean_path
    folder = clean_path.parent
    if folder not in listings:
        listings[folder] = {}
        for entry in sorted(folder.iterdir()) if folder.is_dir() else ():
            listings[folder].setdefault(unicodedata.normalize("NFC", entry.name), entry)
    found = listings[folder].get(unicodedata.normalize("NFC", clean_path.name))
    return found if found is not None and _is_entry(found) else clean_path


def _in_split(split: str, *parts: str) -> str:
    """A pair's or file's name in its split: "<split>/<parts…>", empty parts left out."""
    return "/".join(part for part in (split, *parts) if part not in ("", "."))


def _shown(path: Path, folder: Path) -> str:
    """`path` as messages show it: relative to the split folder."""
    return path.relative_to(folder).as_posix()


def _listed(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted (a link to nothing too: reading it says why it fails)."""
    return sorted(p for p in folder.iterdir() if _is_entry(p) and p.suffix.lower() in IMAGE_SUFFIXES)


def _moire_files(folder: Path, layout: DatasetLayout) -> Iterator[tuple[Path, re.Match[str]]]:
    """(path, name match) of each moiré image of a split folder, sorted; a generator, so detection can stop at
    the first match (the folder is still listed whole first)."""
    if not (folder / layout.moire_dir).is_dir() or not (folder / layout.clean_dir).is_dir():
        return
    moire_root = folder / layout.moire_dir
    if layout.recursive:
        candidates = image_files(moire_root)
    else:
        candidates = _listed(moire_root)
    for path in candidates:
        match = layout.moire_file.fullmatch(path.name)
        if match:
            yield path, match


def _holds(folder: Path, layout: DatasetLayout) -> bool:
    """Whether `folder` has the layout's folders and at least one moiré file named its way."""
    return next(_moire_files(folder, layout), None) is not None


def _split_named(folder_name: str) -> str | None:
    """Our split name for a dataset folder name (`Train`, `testData` …), or None."""
    lowered = folder_name.lower()
    return next((split for split, names in SPLIT_FOLDERS.items() if lowered in names), None)


def _listing_order(layout: DatasetLayout) -> int:
    """Position of a layout in DATASET_LAYOUTS, so messages list layouts the way the docs do."""
    return DATASET_LAYOUTS.index(layout.name)
