"""What a conversion is asked to do, checked before any file is written: `plan`.

The arguments, the split of every input, the reader options and the layout that
all splits share, and the fingerprint that a finished conversion records. The
fingerprint holds every option that changes the records, the records' group column
(`rows.group_source`) and, per input file, its
absolute path, size and modification time (through `tf.io.gfile`, so `gs://`
inputs count too): a rerun after an input changed converts again instead of
returning the stale conversion. Each runner adds what only it decides (the local
runner its `records_per_shard`, the Beam runner its name).
"""
import dataclasses
import json
import os
import re
from typing import Dict, List, Optional, Tuple

from pwiser_tf import fileio
from pwiser_tf import options as choices
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.conversion.rows import group_source
from pwiser_tf.pipelines.readers import open_reader, reader_class
from pwiser_tf.pipelines.readers.base import Layout, check_input_file

SPLITS = ("train", "validation", "test")
_WORDS = {"train": ("train",), "test": ("test",),
          "validation": ("val", "valid", "validation", "dev")}
COMPRESSIONS = ("", "GZIP")
# reader options that change how a file is read, never what it holds
_UNRECORDED_OPTIONS = ("block_bytes",)


@dataclasses.dataclass
class Plan:
    """A checked conversion: the input files by split, the reader options, the layout
    every split shares and the fingerprint (`plain` JSON) a finished one records."""

    format: str
    by_split: Dict[str, List[str]]
    options: dict
    layout: Layout
    compression: str
    validation_fraction: float
    seed: int
    remap_ids: bool
    fingerprint: dict

    def outputs(self, split: str) -> List[str]:
        """The output splits that the input `split` writes (train may carve validation)."""
        carve = split == "train" and self.validation_fraction > 0
        return [split] + (["validation"] if carve else [])

    def reader(self, split: str):
        """A reader of the input `split`."""
        return open_reader(self.format, self.by_split[split], **self.options)


def plan(format: str, inputs, *, compression: Optional[str], validation_fraction: float,
         seed: int, remap_ids: bool, skip_malformed: bool, conversion_without_click: str,
         reader_options: dict, runner: dict) -> Plan:
    """Checks a conversion's arguments and inputs (every runner) and returns its `Plan`.

    `runner` holds what only the runner decides and the fingerprint records as well
    (`{"records_per_shard": n}`, `{"runner": "beam"}`).
    """
    by_split, compression = check_arguments(format, inputs, compression, validation_fraction)
    if conversion_without_click not in choices.CONVERSION_WITHOUT_CLICK_IN_CONVERT:
        raise InputError(f"conversion_without_click must be one of "
                         f"{choices.CONVERSION_WITHOUT_CLICK_IN_CONVERT}, got "
                         f"{conversion_without_click!r}")
    options = dict(skip_malformed=skip_malformed,
                   conversion_without_click=conversion_without_click, **reader_options)
    inputs = {split: [input_stat(p) for p in paths] for split, paths in by_split.items()}
    refuse_shared_files(inputs)
    layouts = {split: open_reader(format, paths, **options).layout  # headers only
               for split, paths in by_split.items()}
    if len(set(layouts.values())) > 1:
        raise InputError(f"the splits' files have different columns: "
                         f"{ {s: l.labels for s, l in layouts.items()} }")
    layout = next(iter(layouts.values()))
    fingerprint = plain({
        "format": format, "validation_fraction": validation_fraction, "seed": seed,
        "compression": compression, "remap_ids": remap_ids, **runner,
        "options": {k: v for k, v in sorted(options.items()) if k not in _UNRECORDED_OPTIONS},
        # the records' group column: a conversion made before it was kept is not reused
        "group": group_source(layout),
        "inputs": inputs})
    return Plan(format, by_split, options, layout, compression, validation_fraction, seed,
                remap_ids, fingerprint)


def check_arguments(format: str, inputs, compression: Optional[str],
                    validation_fraction: float) -> Tuple[Dict[str, List[str]], str]:
    """Checks a conversion's arguments before any file is touched.

    Returns the input files by split and the normalised compression.
    """
    reader_class(format)  # an unknown format fails first
    compression = (compression or "").upper()
    if compression not in COMPRESSIONS:
        raise InputError(f"compression must be '' or 'GZIP', got {compression!r}")
    if not 0.0 <= validation_fraction < 1.0:
        raise InputError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    by_split = assign_splits(inputs)
    if not by_split:
        raise InputError("no input files given")
    if validation_fraction > 0 and "validation" in by_split:
        raise InputError("a validation split is given as files and by validation_fraction; "
                         "choose one")
    if validation_fraction > 0 and "train" not in by_split:
        raise InputError("validation_fraction carves from train, but no train input is given")
    return by_split, compression


def assign_splits(inputs) -> Dict[str, List[str]]:
    """`{split: [paths]}` from `PATH` / `SPLIT=PATH` entries or a mapping."""
    if isinstance(inputs, dict):
        items = [(split, path) for split, paths in inputs.items() for path in paths]
    else:
        items = []
        for entry in inputs:
            split, sep, path = str(entry).partition("=")
            if sep and split not in SPLITS and re.fullmatch(r"[A-Za-z_]+", split) and \
                    not os.path.exists(entry):  # a mistyped SPLIT=, not a file named so
                raise InputError(f"{entry}: unknown split {split!r}; use one of "
                                 f"{', '.join(SPLITS)}")
            items.append((split, path) if sep and split in SPLITS else (None, str(entry)))
    out: Dict[str, List[str]] = {}
    for split, path in items:
        split = split or infer_split(path)
        if split not in SPLITS:
            raise InputError(f"{path}: unknown split {split!r}; use one of {', '.join(SPLITS)}")
        out.setdefault(split, []).append(path)
    return out


def infer_split(path: str) -> str:
    """The split a file name (else its nearest folder name) names; `InputError` if none."""
    parts = fileio.absolute(path).replace("://", "/").split("/")[::-1]
    for part in parts:
        words = set(re.split(r"[^a-z]+", part.lower()))
        found = [split for split, names in _WORDS.items() if words & set(names)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            break
    raise InputError(f"{path}: cannot tell its split from its name; give it as "
                     f"SPLIT=PATH (train=, validation= or test=)")


def input_stat(path: str) -> list:
    """`[absolute path, size, modification time (s)]` of a readable, non-empty input."""
    check_input_file(path)
    info = fileio.gfile.stat(path)
    if info.length == 0:
        raise InputError(f"{path}: empty file")
    return [fileio.absolute(path), info.length, int(info.mtime_nsec // 10**9)]


def refuse_shared_files(stats: Dict[str, list]) -> None:
    """One file in two splits (or twice in one) would leak test rows into training."""
    seen: Dict[str, str] = {}
    for split, files in stats.items():
        for path, _, _ in files:
            if path in seen:
                twice = "twice in " + split if seen[path] == split else \
                    f"as both {seen[path]} and {split}"
                raise InputError(f"{path}: given {twice}; each file belongs to one split")
            seen[path] = split


def plain(value):
    """`value` as JSON gives it back (tuples become lists), so fingerprints compare."""
    return json.loads(json.dumps(value))
