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
a directory without it is never taken for a finished conversion. A conversion
that replaces a finished one (`overwrite`) is written into `.staging/` and moved
into place only when it has finished, so one that fails leaves the old one intact;
a refused conversion removes an output folder it created and left empty.

Example:

>>> from pwiser_tf.pipelines.convert import convert
>>> metadata = convert("aliexpress-csv", ["train.csv", "test.csv"], "out/",
...                    validation_fraction=0.1)                # doctest: +SKIP
>>> metadata.splits["validation"].counts                       # doctest: +SKIP
"""
import contextlib
import json
import os
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from pwiser_tf import fileio
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines import schema as schema_lib
from pwiser_tf.pipelines.readers import open_reader, reader_class
from pwiser_tf.pipelines.readers.base import check_input_file
from pwiser_tf.pipelines.readers.idmap import FILE as ID_MAPS_FILE
from pwiser_tf.pipelines.readers.idmap import IdMap
from pwiser_tf.pipelines.records import ExampleEncoder, ShardWriter

gfile = fileio.gfile
SPLITS = ("train", "validation", "test")
_WORDS = {"train": ("train",), "test": ("test",),
          "validation": ("val", "valid", "validation", "dev")}
_MARKER = ".{}.done.json"
_INDEX_DIR = ".index"  # the raw joins' on-disk index, inside the output, removed when done
_STAGING_DIR = ".staging"  # a replacement of a finished conversion, until it has finished
_HASH_SEED = 0x9E3779B97F4A7C15
MAX_VOCAB = 1 << 31       # a field's max id + 1 above this is refused
MAX_VOCAB_RATIO = 1000    # ... and so is one above this many times its distinct ids,
SPARSE_VOCAB_FLOOR = 1 << 20  # ... if it is also above this (a small table costs nothing)
_SAMPLE_ROWS = 1024       # rows of each chunk whose ids bound the distinct count from below
_SAMPLE_MERGE = 1 << 16


def convert(format: str, inputs: Union[Sequence[str], Dict[str, Sequence[str]]],
            output_dir: str, *, validation_fraction: float = 0.0, seed: int = 0,
            compression: str = "", records_per_shard: int = 500_000,
            skip_malformed: bool = False, conversions_without_click: str = "drop",
            remap_ids: bool = False, overwrite: bool = False, progress: bool = True,
            max_vocab: int = MAX_VOCAB, max_vocab_ratio: float = MAX_VOCAB_RATIO,
            sparse_vocab_floor: int = SPARSE_VOCAB_FLOOR, **reader_options) -> schema_lib.Metadata:
    """Converts `inputs` of `format` into `output_dir`; returns its `Metadata`.

    Args:
      format: a reader format (`pwiser_tf.pipelines.readers.FORMATS`).
      inputs: paths (`PATH` or `SPLIT=PATH`, see the module docstring) or
        `{split: [paths]}`; local or on any filesystem `tf.io.gfile` knows.
      output_dir: created if needed; local, `gs://`, `ram://`, ... One conversion at
        a time writes it: a second one into the same local directory is refused
        with the process id of the first.
      validation_fraction: share of the train rows (by hash of the row id) written
        to the `validation` split instead; 0 writes none.
      seed: salts that hash.
      compression: `""` or `"GZIP"`.
      records_per_shard: at most this many records per shard file (at least 1).
      skip_malformed, conversions_without_click, **reader_options: passed to the
        readers (`open_reader`).
      remap_ids: renumber each field's ids 1..k (0 stays "absent") over all splits,
        with one extra pass, and save the map as `id_maps.npz` (see
        `readers/idmap.py`); for raw Ali-CCP, whose ids share one global space.
      overwrite: replace a finished (or corrupt) conversion of other inputs in
        `output_dir`, shards of every split included; it stays in place until the
        new conversion has finished (written in `output_dir/.staging/`).
      progress: a tqdm bar of bytes read, on stderr.
      max_vocab: refuse a field whose max id + 1 (its embedding table) exceeds this
        (default 2^31) and advise `remap_ids`.
      max_vocab_ratio: refuse a field whose max id + 1 exceeds this many times its
        distinct ids (default 1000): a few outlying ids would make a mostly empty table;
      sparse_vocab_floor: ... when its max id + 1 is also above this (default 2^20;
        the ids of a small sample of real data are sparse, and a small table is cheap).

    Every input file must hold rows, and every split written must be non-empty;
    anything else is an `InputError` that names the file or split.
    """
    by_split, compression = check_arguments(format, inputs, compression,
                                            validation_fraction)
    if isinstance(records_per_shard, bool) or \
            not isinstance(records_per_shard, (int, np.integer)) or records_per_shard < 1:
        raise InputError(f"records_per_shard must be at least 1, got {records_per_shard!r}")
    options = dict(skip_malformed=skip_malformed,
                   conversions_without_click=conversions_without_click, **reader_options)
    fingerprint = {
        "format": format, "validation_fraction": validation_fraction, "seed": seed,
        "compression": compression, "records_per_shard": records_per_shard,
        "remap_ids": remap_ids,
        "options": {k: v for k, v in sorted(options.items()) if k != "block_bytes"},
        "inputs": {split: [_stat(p) for p in paths] for split, paths in by_split.items()}}
    _refuse_shared_files(fingerprint["inputs"])
    layouts = {split: open_reader(format, paths, **options).layout  # headers only
               for split, paths in by_split.items()}
    if len(set(layouts.values())) > 1:
        raise InputError(f"the splits' files have different columns: "
                         f"{ {s: l.labels for s, l in layouts.items()} }")
    with output_lock(output_dir):
        index_dir = None
        if reader_class(format).joins and not options.get("index_dir") and \
                fileio.is_local(output_dir):
            index_dir = os.path.join(output_dir, _INDEX_DIR)  # never in the system temp
            options["index_dir"] = index_dir
        try:
            return _convert(format, by_split, output_dir, options, fingerprint,
                            layouts, validation_fraction, seed, compression,
                            records_per_shard, remap_ids, overwrite, progress,
                            (max_vocab, max_vocab_ratio, sparse_vocab_floor))
        finally:
            if index_dir is not None and gfile.exists(index_dir):
                fileio.remove_tree(index_dir)


def _convert(format, by_split, output_dir, options, fingerprint, layouts,
             validation_fraction, seed, compression, records_per_shard, remap_ids, overwrite,
             progress, limits) -> schema_lib.Metadata:
    done = publish_staged(output_dir, fingerprint)
    if done is None:
        done = _finished(output_dir, fingerprint, overwrite)
    if done is not None:
        return done
    work_dir = work_directory(output_dir)

    layout = next(iter(layouts.values()))
    id_map = _id_map(format, by_split, options, work_dir, fingerprint, layout,
                     progress) if remap_ids else None
    results = {}
    for split in (s for s in SPLITS if s in by_split):
        results[split] = _split_result(format, split, by_split[split], work_dir, fingerprint,
                                       options, validation_fraction, seed, compression,
                                       records_per_shard, progress, id_map, limits[0])
    vocab: Dict[str, int] = {}
    for result in results.values():
        for name, top in result["max_ids"].items():
            vocab[name] = max(vocab.get(name, 1), top + 1)
    if id_map is None:
        _check_vocab(vocab, results, format, by_split, options, layout, *limits)
    splits = {}
    for result in results.values():
        for name, split in result["splits"].items():
            splits[name] = schema_lib.Split(files=split["files"], counts=split["counts"],
                                            records=split.get("records", []))
    metadata = schema_lib.Metadata(
        schema=layout.schema({n: vocab.get(n, 1) for n in _vocab_fields(layout)}),
        splits=splits, source_format=format, compression=compression,
        extra={"fingerprint": fingerprint,
               "source_counts": {s: r["source_counts"] for s, r in results.items()},
               **({"id_maps": ID_MAPS_FILE} if remap_ids else {})})
    keep = {name for split in splits.values() for name in split.files}
    for stray in _shards(work_dir):  # old shards of splits this conversion lacks
        if os.path.basename(stray) not in keep:
            gfile.remove(stray)
    metadata.save(work_dir)
    for marker in gfile.glob(fileio.join(work_dir, _MARKER.format("*"))):
        gfile.remove(marker)  # the metadata now says it all
    if work_dir != output_dir:
        _publish(work_dir, output_dir, metadata)
    return metadata


@contextlib.contextmanager
def output_lock(output_dir: str):
    """Creates `output_dir` if needed and holds its conversion lock (every runner).
    A refused conversion leaves no new folder behind (`fileio.removed_if_refused`)."""
    with fileio.removed_if_refused(output_dir):
        fileio.make_dirs(output_dir, "--output")
        with fileio.exclusive_lock(output_dir, "conversion"):
            yield


def work_directory(output_dir: str) -> str:
    """Where a conversion writes: `output_dir`, or its staging folder while a finished
    conversion is there (it stays in place until its replacement has finished)."""
    staging = fileio.join(output_dir, _STAGING_DIR)
    if not gfile.exists(fileio.join(output_dir, schema_lib.METADATA_FILE)):
        if gfile.exists(staging):
            fileio.remove_tree(staging)  # a replacement of a conversion no longer there
        return output_dir
    gfile.makedirs(staging)
    return staging


def publish_staged(output_dir: str, fingerprint: dict) -> Optional[schema_lib.Metadata]:
    """Finishes moving a staged conversion of `fingerprint` into place, when a run
    was killed while it published it; None when there is none."""
    staging = fileio.join(output_dir, _STAGING_DIR)
    if not gfile.exists(fileio.join(staging, schema_lib.METADATA_FILE)):
        return None
    try:
        metadata = schema_lib.Metadata.load(staging)
    except schema_lib.MetadataError:
        return None
    if metadata.extra.get("fingerprint") != _plain(fingerprint):
        return None
    _publish(staging, output_dir, metadata)
    return metadata


def _publish(staging: str, output_dir: str, metadata: schema_lib.Metadata) -> None:
    """Replaces the conversion in `output_dir` by the finished one in `staging`;
    `metadata.json` last. Every step can be repeated (`publish_staged`)."""
    target = fileio.join(output_dir, schema_lib.METADATA_FILE)
    if gfile.exists(target):
        gfile.remove(target)  # from here on the old conversion is gone
    new = {name for split in metadata.splits.values() for name in split.files}
    if metadata.extra.get("id_maps"):
        new.add(ID_MAPS_FILE)
    for old in (_shards(output_dir) + gfile.glob(fileio.join(output_dir, _MARKER.format("*")))
                + gfile.glob(fileio.join(output_dir, ID_MAPS_FILE))):
        if os.path.basename(old) not in new:
            gfile.remove(old)
    for name in sorted(new):
        source = fileio.join(staging, name)
        if gfile.exists(source):  # (moved already by a run killed while publishing)
            gfile.rename(source, fileio.join(output_dir, name), overwrite=True)
    gfile.rename(fileio.join(staging, schema_lib.METADATA_FILE), target, overwrite=True)
    fileio.remove_tree(staging)


def check_arguments(format: str, inputs, compression: Optional[str],
                    validation_fraction: float) -> Tuple[Dict[str, List[str]], str]:
    """Checks a conversion's arguments before any file is touched (every runner).

    Returns the input files by split and the normalised compression.
    """
    reader_class(format)  # an unknown format fails first
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
    parts = _absolute(path).replace("://", "/").split("/")[::-1]
    for part in parts:
        words = set(re.split(r"[^a-z]+", part.lower()))
        found = [split for split, names in _WORDS.items() if words & set(names)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            break
    raise InputError(f"{path}: cannot tell its split from its name; give it as "
                     f"SPLIT=PATH (train=, validation= or test=)")


def _absolute(path: str) -> str:
    return os.path.normpath(os.path.abspath(path)) if fileio.is_local(path) else path


def _stat(path: str):
    check_input_file(path)
    info = gfile.stat(path)
    if info.length == 0:
        raise InputError(f"{path}: empty file")
    return [_absolute(path), info.length, int(info.mtime_nsec // 10**9)]


def _refuse_shared_files(stats: Dict[str, list]) -> None:
    """One file in two splits (or twice in one) would leak test rows into training."""
    seen: Dict[str, str] = {}
    for split, files in stats.items():
        for path, _, _ in files:
            if path in seen:
                twice = "twice in " + split if seen[path] == split else \
                    f"as both {seen[path]} and {split}"
                raise InputError(f"{path}: given {twice}; each file belongs to one split")
            seen[path] = split


def _shards(output_dir: str) -> List[str]:
    return gfile.glob(fileio.join(output_dir, "*-*.tfrecord*"))


def _finished(output_dir, fingerprint, overwrite):
    """The metadata of an identical finished conversion; None if there is none, or if a
    different one may be replaced (`overwrite`; it stays until the new one has finished)."""
    path = fileio.join(output_dir, schema_lib.METADATA_FILE)
    if not gfile.exists(path):
        return None
    try:
        metadata, problem = schema_lib.Metadata.load(output_dir), None
    except schema_lib.MetadataError as err:
        metadata, problem = None, str(err)
    if metadata is not None and metadata.extra.get("fingerprint") == _plain(fingerprint):
        return metadata
    if not overwrite:
        if problem:
            raise InputError(f"{problem}; the metadata is corrupt: convert again with "
                             f"--overwrite (overwrite=True)")
        raise InputError(f"{output_dir}: holds a finished conversion of other inputs or "
                         f"options; choose another output directory or overwrite it")
    return None


def _plain(value):
    return json.loads(json.dumps(value))


def _id_map(format, by_split, options, output_dir, fingerprint, layout, progress) -> IdMap:
    """The id map of all splits: reused from an interrupted run, or collected and saved."""
    marker = fileio.join(output_dir, _MARKER.format("id_maps"))
    if _read_marker(marker, fingerprint) is not None and \
            gfile.exists(fileio.join(output_dir, ID_MAPS_FILE)):
        return IdMap.load(output_dir)
    id_map = IdMap.collect(layout, (_with_bar(open_reader(format, paths, **options), progress,
                                              f"ids of {split}")
                                    for split, paths in by_split.items()))
    id_map.save(output_dir)
    fileio.write_json(marker, {"fingerprint": _plain(fingerprint)})
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
                  compression, records_per_shard, progress, id_map, max_vocab) -> dict:
    """Converts one input split (train also writes validation), or reuses its marker."""
    marker = fileio.join(output_dir, _MARKER.format(split))
    # a split depends on its own inputs and the options, not on the other splits' files
    # (unless ids are renumbered over all splits)
    if not fingerprint["remap_ids"]:
        fingerprint = dict(fingerprint, inputs=fingerprint["inputs"][split])
    if gfile.exists(marker):
        reused = _reusable(marker, fingerprint, output_dir)
        if reused is not None:
            return reused
        gfile.remove(marker)
    outputs = [split] + (["validation"] if split == "train" and fraction > 0 else [])
    for name in outputs:  # what an interrupted run of this split left behind
        for stale in gfile.glob(fileio.join(output_dir, f"{name}-*.tfrecord*")):
            gfile.remove(stale)

    reader = open_reader(format, paths, **options)
    layout = reader.layout
    encoder = ExampleEncoder(layout.schema({n: 1 for n in _vocab_fields(layout)}))
    writers = {name: ShardWriter(output_dir, name, compression=compression,
                                 records_per_shard=records_per_shard) for name in outputs}
    counts = {name: {"rows": 0, "clicks": 0, "conversions": 0} for name in outputs}
    ids = IdStats(layout, max_vocab if id_map is None else None)
    bar = _bar(progress, reader.size, split)
    try:
        for chunk in reader:
            bar.update(reader.position - bar.n)
            if id_map is not None:
                chunk = id_map.apply(layout, chunk)
            ids.update(chunk)
            for name, part in route_rows(chunk, split, fraction, seed):
                writers[name].write(*encoder.encode(_columns(layout, part)))
                for key, value in label_counts(part).items():
                    counts[name][key] += value
        bar.update(reader.size - bar.n)
        _check_rows(reader, split, counts, fraction)
        files = {name: writer.close() for name, writer in writers.items()}
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        bar.close()
    result = {"fingerprint": _plain(fingerprint), **ids.as_dict(),
              "source_counts": reader.counts.as_dict(),
              "splits": {name: {"files": files[name], "counts": counts[name],
                                "records": writers[name].shard_records}
                         for name in outputs}}
    fileio.write_json(marker, result)
    return result


def _check_rows(reader, split: str, counts: dict, fraction: float) -> None:
    """Every input file yielded rows and every output split holds some."""
    for path, rows in reader.rows_by_path.items():
        if rows == 0:
            malformed = reader.counts.malformed
            raise InputError(
                f"{path}: no rows left: --skip-malformed skipped its {malformed} malformed "
                f"line(s)" if malformed else f"{path}: no data rows (empty or only a header)")
    for name, count in counts.items():
        if count["rows"]:
            continue
        if name == "validation":
            why = (f"validation_fraction {fraction} held out none of the "
                   f"{counts[split]['rows']} train rows; raise it or give a validation file")
        elif reader.counts.dropped:
            why = (f"all its {reader.counts.dropped} rows are conversions without a click, "
                   f"which are dropped (keep them with --conversions-without-click click)")
        else:
            why = "no rows are left for it"
        raise InputError(f"split {name!r} would be empty: {why}")


class IdStats:
    """Per field: the max id and where it was seen, and a lower bound of the distinct
    ids (the distinct ids of a sample of every chunk), for the vocabulary checks."""

    def __init__(self, layout, max_vocab: Optional[int]):
        self.layout, self.max_vocab = layout, max_vocab
        self.max_ids: Dict[str, int] = {}
        self.max_at: Dict[str, str] = {}
        self._sample: Dict[str, np.ndarray] = {}
        self._pending: Dict[str, list] = {}

    def update(self, chunk) -> None:
        if not len(chunk):
            return
        columns = []  # (field, max id, its row or None, sorted sample)
        if self.layout.categorical:
            tops = chunk.categorical.max(axis=0).tolist()
            sample = np.sort(chunk.categorical[:_SAMPLE_ROWS].T, axis=1)  # rows: fields
            for j, name in enumerate(self.layout.categorical):
                columns.append((name, tops[j], j, sample[j]))
        for name, _ in self.layout.multi_valued:
            values = chunk.multi_valued[name].values
            if len(values):
                columns.append((name, int(values.max()), None,
                                np.sort(values[:_SAMPLE_ROWS * 4])))
        for name, top, column, sample in columns:
            if name not in self.max_ids or top > self.max_ids[name]:
                self.max_ids[name], self.max_at[name] = top, chunk.where(
                    self._row(chunk, name, column))
                if self.max_vocab is not None and top + 1 > self.max_vocab:
                    raise InputError(_vocab_message(self.max_at[name], name, top,
                                                    f"over the limit of {self.max_vocab:,}"))
            distinct = sample[np.concatenate([[True], sample[1:] != sample[:-1]])]
            pending = self._pending.setdefault(name, [])
            pending.append(distinct)
            if sum(len(p) for p in pending) > _SAMPLE_MERGE:
                self._merge(name)

    @staticmethod
    def _row(chunk, name: str, column) -> int:
        """The row of a chunk holding the field's largest id."""
        if column is not None:
            return int(chunk.categorical[:, column].argmax())
        field = chunk.multi_valued[name]
        return int(np.searchsorted(np.cumsum(field.lengths), int(field.values.argmax()),
                                   side="right"))

    def _merge(self, name: str) -> None:
        self._sample[name] = np.unique(np.concatenate(
            [self._sample.get(name, np.zeros([0], np.int64))] + self._pending.pop(name, [])))

    def as_dict(self) -> dict:
        for name in list(self._pending):
            self._merge(name)
        return {"max_ids": dict(self.max_ids), "max_at": dict(self.max_at),
                "distinct_at_least": {n: int(len(v)) for n, v in self._sample.items()}}


def _vocab_message(where: str, name: str, top: int, why: str) -> str:
    return (f"{where}: field {name!r} has id {top:,}, so its embedding table would need "
            f"{top + 1:,} rows, {why}; renumber the ids with --remap-ids (remap_ids=True)")


def _check_vocab(vocab, results, format, by_split, options, layout, max_vocab,
                 max_vocab_ratio, floor) -> None:
    """Refuses vocabularies far larger than the distinct ids: one extra counting pass,
    only for fields whose sampled distinct ids leave the question open."""
    def where(name):
        found = [r.get("max_at", {}).get(name) for r in results.values()
                 if r["max_ids"].get(name, -1) + 1 == vocab[name]]
        return next((w for w in found if w), "the inputs")

    for name, size in vocab.items():
        if size > max_vocab:
            raise InputError(_vocab_message(where(name), name, size - 1,
                                            f"over the limit of {max_vocab:,}"))
    bound = {name: max(r.get("distinct_at_least", {}).get(name, 0) for r in results.values())
             for name in vocab}
    open_question = [n for n, size in vocab.items()
                     if size > floor and size > max_vocab_ratio * max(1, bound[n])]
    if not open_question:
        return
    tables = IdMap.collect(layout, (open_reader(format, paths, **options)
                                    for paths in by_split.values())).tables
    for name in open_question:
        distinct = int(np.count_nonzero(tables[name]))  # 0 stands for "absent"
        if vocab[name] > max_vocab_ratio * max(1, distinct):
            raise InputError(_vocab_message(
                where(name), name, vocab[name] - 1,
                f"over {max_vocab_ratio:g} times its {distinct:,} distinct ids"))


def _read_marker(marker: str, fingerprint: dict):
    """The marker's content if it records this fingerprint; None otherwise (or if a
    killed run left it unreadable)."""
    try:
        result = fileio.read_json(marker)
        return result if result["fingerprint"] == _plain(fingerprint) else None
    except Exception:  # unreadable, malformed, or another run's: not reusable
        return None


def _reusable(marker: str, fingerprint: dict, output_dir: str):
    """The marker's result if it matches and its shards exist, else None."""
    result = _read_marker(marker, fingerprint)
    try:
        files = [n for s in result["splits"].values() for n in s["files"]]
    except (KeyError, TypeError, AttributeError):
        return None
    if all(gfile.exists(fileio.join(output_dir, n)) for n in files):
        return result
    return None


def route_rows(chunk, split: str, fraction: float, seed: int):
    """Yields the non-empty parts of `chunk` as `(output split, rows)`: a `train`
    chunk's rows whose hashed id falls below `fraction` go to `validation`
    (`validation_mask`), the rest stay in `split`. Both runners route this way."""
    if split != "train" or fraction <= 0:
        parts = [(split, chunk)]
    else:
        held_out = validation_mask(chunk.row_id, fraction, seed)
        parts = [(split, chunk.select(~held_out)), ("validation", chunk.select(held_out))]
    yield from ((name, part) for name, part in parts if len(part))


def label_counts(rows) -> Dict[str, int]:
    """The rows, clicks and conversions of a chunk, as `metadata.json` counts them."""
    return {"rows": len(rows), "clicks": int(rows.labels["click"].sum()),
            "conversions": int(rows.labels["conversion"].sum())}


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
