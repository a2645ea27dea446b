"""`convert`: files of a public format to a converted directory (sharded TFRecords).

The output is the layout of `pipelines/schema.py`: shards
`{split}-{i:05d}-of-{n:05d}.tfrecord[.gz]` of `tf.train.Example` records and a
`metadata.json` written last, with the schema (vocabulary sizes are max id + 1
over all splits), the counts of every split and the readers' counts of each
input split (`extra["source_counts"]`: conversions without a click, dropped and
malformed lines).

Splits of the inputs: each input is `PATH` or `SPLIT=PATH`. Without a `SPLIT=`,
the split comes from the file name, else from its folder names, nearest first:
a name holding the word `train`, `test`, or `val`/`valid`/`validation`/`dev`
(words are separated by non-letters, so `ali_ccp_val_sample.csv` is
validation and `test/small.txt` is test). `validation_fraction` carves a
validation split from train by a hash of each row's id (the search id for
AliExpress, so a search never straddles two splits): deterministic for a given
`seed`, whatever the sharding or chunking.

Crashes and reruns: shards are written under `.partial` names and renamed when
their split is complete; a marker `.{split}.done.json` then records the split's
shards, counts and vocabulary maxima with a fingerprint of the inputs and
options. A rerun reuses every split whose marker matches, removes whatever else
an interrupted run left and converts the rest; `metadata.json` comes last, so
a directory without it is never taken for a finished conversion.

Example:

>>> from pwiser_tf.pipelines.convert import convert
>>> metadata = convert("aliexpress-csv", ["train.csv", "test.csv"], "out/",
...                    validation_fraction=0.1)                # doctest: +SKIP
>>> metadata.splits["validation"].counts                       # doctest: +SKIP
"""
import glob
import json
import os
import re
import sys
from typing import Dict, List, Sequence, Union

import numpy as np

from pwiser_tf.errors import InputError
from pwiser_tf.pipelines import schema as schema_lib
from pwiser_tf.pipelines.readers import open_reader, reader_class
from pwiser_tf.pipelines.readers.idmap import FILE as ID_MAPS_FILE
from pwiser_tf.pipelines.readers.idmap import IdMap
from pwiser_tf.pipelines.records import ExampleEncoder, ShardWriter

SPLITS = ("train", "validation", "test")
_WORDS = {"train": ("train",), "test": ("test",),
          "validation": ("val", "valid", "validation", "dev")}
_MARKER = ".{}.done.json"
_HASH_SEED = 0x9E3779B97F4A7C15


def convert(format: str, inputs: Union[Sequence[str], Dict[str, Sequence[str]]],
            output_dir: str, *, validation_fraction: float = 0.0, seed: int = 0,
            compression: str = "", records_per_shard: int = 500_000,
            skip_malformed: bool = False, conversions_without_click: str = "drop",
            remap_ids: bool = False, overwrite: bool = False, progress: bool = True,
            **reader_options) -> schema_lib.Metadata:
    """Converts `inputs` of `format` into `output_dir`; returns its `Metadata`.

    Args:
      format: a reader format (`pwiser_tf.pipelines.readers.FORMATS`).
      inputs: paths (`PATH` or `SPLIT=PATH`, see the module docstring) or
        `{split: [paths]}`.
      output_dir: created if needed.
      validation_fraction: share of the train rows (by hash of the row id) written
        to the `validation` split instead; 0 writes none.
      seed: salts that hash.
      compression: `""` or `"GZIP"`.
      records_per_shard: at most this many records per shard file.
      skip_malformed, conversions_without_click, **reader_options: passed to the
        readers (`open_reader`).
      remap_ids: renumber each field's ids 1..k (0 stays "absent") over all splits,
        with one extra pass, and save the map as `id_maps.npz` (see
        `readers/idmap.py`); for raw Ali-CCP, whose ids share one global space.
      overwrite: replace a finished conversion of other inputs in `output_dir`.
      progress: a tqdm bar of bytes read, on stderr.
    """
    reader_class(format)  # an unknown format fails before any file is touched
    compression = (compression or "").upper()
    if compression not in ("", "GZIP"):
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
    options = dict(skip_malformed=skip_malformed,
                   conversions_without_click=conversions_without_click, **reader_options)
    fingerprint = {
        "format": format, "validation_fraction": validation_fraction, "seed": seed,
        "compression": compression, "records_per_shard": records_per_shard,
        "remap_ids": remap_ids,
        "options": {k: v for k, v in sorted(options.items()) if k != "block_bytes"},
        "inputs": {split: [_stat(p) for p in paths] for split, paths in by_split.items()}}
    layouts = {split: open_reader(format, paths, **options).layout  # headers only
               for split, paths in by_split.items()}
    if len(set(layouts.values())) > 1:
        raise InputError(f"the splits' files have different columns: "
                         f"{ {s: l.labels for s, l in layouts.items()} }")
    os.makedirs(output_dir, exist_ok=True)
    done = _finished(output_dir, fingerprint, overwrite)
    if done is not None:
        return done

    layout = next(iter(layouts.values()))
    id_map = _id_map(format, by_split, options, output_dir, fingerprint, layout,
                     progress) if remap_ids else None
    results = {}
    for split in (s for s in SPLITS if s in by_split):
        results[split] = _split_result(format, split, by_split[split], output_dir, fingerprint,
                                       options, validation_fraction, seed, compression,
                                       records_per_shard, progress, id_map)
    vocab: Dict[str, int] = {}
    for result in results.values():
        for name, top in result["max_ids"].items():
            vocab[name] = max(vocab.get(name, 1), top + 1)
    splits = {}
    for result in results.values():
        for name, split in result["splits"].items():
            splits[name] = schema_lib.Split(files=split["files"], counts=split["counts"])
    metadata = schema_lib.Metadata(
        schema=layout.schema({n: vocab.get(n, 1) for n in _vocab_fields(layout)}),
        splits=splits, source_format=format, compression=compression,
        extra={"fingerprint": fingerprint,
               "source_counts": {s: r["source_counts"] for s, r in results.items()},
               **({"id_maps": ID_MAPS_FILE} if remap_ids else {})})
    metadata.save(output_dir)
    for marker in glob.glob(os.path.join(output_dir, _MARKER.format("*"))):
        os.remove(marker)  # the metadata now says it all
    return metadata


def assign_splits(inputs) -> Dict[str, List[str]]:
    """`{split: [paths]}` from `PATH` / `SPLIT=PATH` entries or a mapping."""
    if isinstance(inputs, dict):
        items = [(split, path) for split, paths in inputs.items() for path in paths]
    else:
        items = []
        for entry in inputs:
            split, sep, path = str(entry).partition("=")
            items.append((split, path) if sep and split in SPLITS else (None, str(entry)))
    out: Dict[str, List[str]] = {}
    for split, path in items:
        split = split or infer_split(path)
        if split not in SPLITS:
            raise InputError(f"{path}: unknown split {split!r}; use one of {SPLITS}")
        out.setdefault(split, []).append(path)
    return out


def infer_split(path: str) -> str:
    """The split a file name (else its nearest folder name) names; `InputError` if none."""
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)[::-1]
    for part in parts:
        words = set(re.split(r"[^a-z]+", part.lower()))
        found = [split for split, names in _WORDS.items() if words & set(names)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            break
    raise InputError(f"{path}: cannot tell its split from its name; give it as "
                     f"SPLIT=PATH (train=, validation= or test=)")


def _stat(path: str):
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    info = os.stat(path)
    return [os.path.abspath(path), info.st_size, int(info.st_mtime)]


def _finished(output_dir, fingerprint, overwrite):
    """The metadata of an identical finished conversion; clears a different one."""
    path = os.path.join(output_dir, schema_lib.METADATA_FILE)
    if not os.path.exists(path):
        return None
    try:
        metadata = schema_lib.Metadata.load(output_dir)
    except schema_lib.MetadataError:
        metadata = None
    if metadata is not None and metadata.extra.get("fingerprint") == _plain(fingerprint):
        return metadata
    if not overwrite:
        raise InputError(f"{output_dir}: holds a finished conversion of other inputs or "
                         f"options; choose another output directory or overwrite it")
    os.remove(path)
    for stale in glob.glob(os.path.join(output_dir, _MARKER.format("*"))) + glob.glob(
            os.path.join(output_dir, ID_MAPS_FILE)):
        os.remove(stale)
    return None


def _plain(value):
    return json.loads(json.dumps(value))


def _id_map(format, by_split, options, output_dir, fingerprint, layout, progress) -> IdMap:
    """The id map of all splits: reused from an interrupted run, or collected and saved."""
    marker = os.path.join(output_dir, _MARKER.format("id_maps"))
    if _read_marker(marker, fingerprint) is not None and \
            os.path.exists(os.path.join(output_dir, ID_MAPS_FILE)):
        return IdMap.load(output_dir)
    id_map = IdMap.collect(layout, (_with_bar(open_reader(format, paths, **options), progress,
                                              f"ids of {split}")
                                    for split, paths in by_split.items()))
    id_map.save(output_dir)
    _write_marker(marker, {"fingerprint": _plain(fingerprint)})
    return id_map


def _with_bar(reader, progress: bool, label: str):
    bar = _bar(progress, reader.size, label)
    try:
        for chunk in reader:
            bar.update(reader.position - bar.n)
            yield chunk
    finally:
        bar.close()


def _split_result(format, split, paths, output_dir, fingerprint, options, fraction, seed,
                  compression, records_per_shard, progress, id_map) -> dict:
    """Converts one input split (train also writes validation), or reuses its marker."""
    marker = os.path.join(output_dir, _MARKER.format(split))
    # a split depends on its own inputs and the options, not on the other splits' files
    # (unless ids are renumbered over all splits)
    if not fingerprint["remap_ids"]:
        fingerprint = dict(fingerprint, inputs=fingerprint["inputs"][split])
    if os.path.exists(marker):
        reused = _reusable(marker, fingerprint, output_dir)
        if reused is not None:
            return reused
        os.remove(marker)
    outputs = [split] + (["validation"] if split == "train" and fraction > 0 else [])
    for name in outputs:  # what an interrupted run of this split left behind
        for stale in glob.glob(os.path.join(output_dir, f"{name}-*.tfrecord*")):
            os.remove(stale)

    reader = open_reader(format, paths, **options)
    layout = reader.layout
    encoder = ExampleEncoder(layout.schema({n: 1 for n in _vocab_fields(layout)}))
    writers = {name: ShardWriter(output_dir, name, compression=compression,
                                 records_per_shard=records_per_shard) for name in outputs}
    counts = {name: {"rows": 0, "clicks": 0, "conversions": 0} for name in outputs}
    max_ids: Dict[str, int] = {}
    bar = _bar(progress, reader.size, split)
    try:
        for chunk in reader:
            bar.update(reader.position - bar.n)
            if id_map is not None:
                chunk = id_map.apply(layout, chunk)
            _track_ids(layout, chunk, max_ids)
            routes = {split: None}
            if len(outputs) > 1:
                held_out = validation_mask(chunk.row_id, fraction, seed)
                routes = {split: ~held_out, "validation": held_out}
            for name, keep in routes.items():
                part = chunk if keep is None else chunk.select(keep)
                if not len(part):
                    continue
                writers[name].write(*encoder.encode(_columns(layout, part)))
                counts[name]["rows"] += len(part)
                counts[name]["clicks"] += int(part.labels["click"].sum())
                counts[name]["conversions"] += int(part.labels["conversion"].sum())
        bar.update(reader.size - bar.n)
        files = {name: writer.close() for name, writer in writers.items()}
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        bar.close()
    result = {"fingerprint": _plain(fingerprint),
              "max_ids": max_ids, "source_counts": reader.counts.as_dict(),
              "splits": {name: {"files": files[name], "counts": counts[name]}
                         for name in outputs}}
    _write_marker(marker, result)
    return result


def _write_marker(marker: str, result: dict) -> None:
    with open(marker + ".tmp", "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(marker + ".tmp", marker)


def _read_marker(marker: str, fingerprint: dict):
    """The marker's content if it records this fingerprint; None otherwise (or if a
    killed run left it unreadable)."""
    try:
        with open(marker, encoding="utf-8") as f:
            result = json.load(f)
        return result if result["fingerprint"] == _plain(fingerprint) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _reusable(marker: str, fingerprint: dict, output_dir: str):
    """The marker's result if it matches and its shards exist, else None."""
    result = _read_marker(marker, fingerprint)
    try:
        files = [n for s in result["splits"].values() for n in s["files"]]
    except (KeyError, TypeError, AttributeError):
        return None
    if all(os.path.exists(os.path.join(output_dir, n)) for n in files):
        return result
    return None


def validation_mask(row_id: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Rows whose hashed id falls below `fraction` (splitmix64 finaliser, salted by seed)."""
    with np.errstate(over="ignore"):
        z = row_id.astype(np.int64).view(np.uint64) + np.uint64(
            (_HASH_SEED * (seed + 1)) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53)) < fraction


def _vocab_fields(layout) -> List[str]:
    return list(layout.categorical) + [name for name, _ in layout.multi_valued]


def _track_ids(layout, chunk, max_ids: Dict[str, int]) -> None:
    if len(chunk) and layout.categorical:
        for name, top in zip(layout.categorical, chunk.categorical.max(axis=0).tolist()):
            max_ids[name] = max(max_ids.get(name, 0), top)
    for name, _ in layout.multi_valued:
        values = chunk.multi_valued[name].values
        if len(values):
            max_ids[name] = max(max_ids.get(name, 0), int(values.max()))


def _columns(layout, chunk) -> dict:
    columns = {schema_lib.CATEGORICAL_KEY: chunk.categorical,
               schema_lib.NUMERICAL_KEY: chunk.numerical, **chunk.labels}
    for name, has_values in layout.multi_valued:
        field = chunk.multi_valued[name]
        columns[f"mv_{name}"] = (field.values, field.lengths)
        if has_values:
            columns[f"mv_{name}_values"] = (field.weights, field.lengths)
    return columns


def _bar(progress: bool, total: int, split: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr, desc=split,
                disable=not progress, leave=False)
