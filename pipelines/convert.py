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

This is the local runner; `pipelines/beam_convert.py` is the Beam one. Both use
the core in `pipelines/conversion/` (the checks, the fingerprint, the output folder
and the metadata), so they accept and refuse the same inputs.

Crashes and reruns: shards are written under `.partial` names and renamed when
their split is complete; a marker `.{split}.done.json` then records the split's
shards, counts and vocabulary maxima with a fingerprint of the inputs and
options (every input's path, size and modification time). A rerun reuses every split whose marker matches, removes whatever else
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
import os
import sys
import time
from typing import Dict, Sequence, Union

import numpy as np

from pwiser_tf import fileio
from pwiser_tf import options as choices
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines import schema as schema_lib
from pwiser_tf.pipelines.conversion import output
from pwiser_tf.pipelines.conversion.checks import (MAX_VOCAB, MAX_VOCAB_RATIO,
                                                   SPARSE_VOCAB_FLOOR, IdStats, check_rows,
                                                   check_vocab, vocab_sizes)
from pwiser_tf.pipelines.conversion.plan import (SPLITS, Plan, assign_splits,
                                                 check_arguments, infer_split, plan)
from pwiser_tf.pipelines.conversion.rows import (RecordEncoder, label_counts, route_rows,
                                                 validation_mask)
from pwiser_tf.pipelines.readers import idmap, reader_class
from pwiser_tf.pipelines.readers.idmap import IdMap
from pwiser_tf.pipelines.records import ShardWriter

gfile = fileio.gfile
_INDEX_DIR = ".index"  # the raw joins' on-disk index, inside the output, removed when done


def convert(format: str, inputs: Union[Sequence[str], Dict[str, Sequence[str]]],
            output_dir: str, *, validation_fraction: float = 0.0, seed: int = 0,
            compression: str = "", records_per_shard: int = 500_000,
            skip_malformed: bool = False, conversion_without_click: str = choices.DROP,
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
      skip_malformed, **reader_options: passed to the readers (`open_reader`).
      conversion_without_click: a source row with click 0 and conversion 1: `"drop"`
        it (default, as the public pipelines do), keep it `"as_click"`, or refuse
        it (`"error"`, naming its file and line); see `pwiser_tf.options`.
      remap_ids: renumber each field's ids 1..k (0 stays "absent") over all splits,
        with one extra pass, and save the map as `id_maps.npz` (see
        `readers/idmap.py`); for raw Ali-CCP, whose ids share one global space.
      overwrite: replace a finished (or corrupt) conversion of other inputs in
        `output_dir`, shards of every split included; it stays in place until the
        new conversion has finished (written in `output_dir/.staging/`).
      progress: on stderr, a tqdm bar of bytes read on a terminal; otherwise (a log)
        one line per input split: its rows, by output split, and rows/s.
      max_vocab: refuse a field whose max id + 1 (its embedding table) exceeds this
        (default 2^31) and advise `remap_ids`.
      max_vocab_ratio: refuse a field whose max id + 1 exceeds this many times its
        distinct ids (default 1000): a few outlying ids would make a mostly empty table;
      sparse_vocab_floor: ... when its max id + 1 is also above this (default 2^20;
        the ids of a small sample of real data are sparse, and a small table is cheap).

    Every input file must hold rows, and every split written must be non-empty;
    anything else is an `InputError` that names the file or split.
    """
    if isinstance(records_per_shard, bool) or \
            not isinstance(records_per_shard, (int, np.integer)) or records_per_shard < 1:
        raise InputError(f"records_per_shard must be at least 1, got {records_per_shard!r}")
    job = plan(format, inputs, compression=compression,
               validation_fraction=validation_fraction, seed=seed, remap_ids=remap_ids,
               skip_malformed=skip_malformed,
               conversion_without_click=conversion_without_click,
               reader_options=reader_options,
               runner={"records_per_shard": int(records_per_shard)})
    limits = dict(max_vocab=max_vocab, max_vocab_ratio=max_vocab_ratio,
                  sparse_vocab_floor=sparse_vocab_floor)
    with output.output_lock(output_dir):
        index_dir = None
        if reader_class(format).joins and not job.options.get("index_dir") and \
                fileio.is_local(output_dir):
            index_dir = os.path.join(output_dir, _INDEX_DIR)  # never in the system temp
            job.options["index_dir"] = index_dir
        try:
            done = output.done_before(output_dir, job.fingerprint, overwrite)
            if done is not None:
                return done
            return _convert(job, output_dir, int(records_per_shard), progress, limits)
        finally:
            if index_dir is not None and gfile.exists(index_dir):
                fileio.remove_tree(index_dir)


def _convert(job: Plan, output_dir: str, records_per_shard: int, progress: bool,
             limits: dict) -> schema_lib.Metadata:
    work_dir = output.work_directory(output_dir)
    id_map = _id_map(job, work_dir, progress) if job.remap_ids else None
    results = {split: _split_result(job, split, work_dir, records_per_shard, progress,
                                    id_map, limits["max_vocab"])
               for split in SPLITS if split in job.by_split}
    stats = list(results.values())
    vocab = vocab_sizes(stats)
    if id_map is None:
        check_vocab(vocab, stats, lambda names: _count_distinct(job, names), **limits)
    splits = {name: schema_lib.Split(files=split["files"], counts=split["counts"],
                                     records=split.get("records", []))
              for result in results.values() for name, split in result["splits"].items()}
    return output.finish(job, work_dir, output_dir, vocab, splits,
                         {s: r["source_counts"] for s, r in results.items()})


def _count_distinct(job: Plan, names) -> Dict[str, int]:
    """The distinct non-zero ids of fields `names` over all splits (one more pass)."""
    tables = IdMap.collect(job.layout, (job.reader(split) for split in job.by_split)).tables
    return {name: int(np.count_nonzero(tables[name])) for name in names}  # 0: "absent"


def _id_map(job: Plan, work_dir: str, progress: bool) -> IdMap:
    """The id map of all splits: reused from an interrupted run, or collected and saved."""
    marker = fileio.join(work_dir, output.MARKER.format("id_maps"))
    if _read_marker(marker, job.fingerprint) is not None and \
            gfile.exists(fileio.join(work_dir, idmap.FILE)):
        return IdMap.load(work_dir)
    id_map = IdMap.collect(job.layout, (_with_bar(job.reader(split), progress, f"ids of {split}")
                                        for split in job.by_split))
    id_map.save(work_dir)
    fileio.write_json(marker, {"fingerprint": job.fingerprint})
    return id_map


def _with_bar(reader, progress: bool, label: str):
    bar = _bar(progress, reader.size, label)
    try:
        for chunk in reader:
            bar.update(reader.position - bar.n)
            yield chunk
    finally:
        bar.close()


def _split_result(job: Plan, split: str, work_dir: str, records_per_shard: int,
                  progress: bool, id_map, max_vocab: int) -> dict:
    """Converts one input split (train also writes validation), or reuses its marker."""
    marker = fileio.join(work_dir, output.MARKER.format(split))
    fingerprint = job.fingerprint
    # a split depends on its own inputs and the options, not on the other splits' files
    # (unless ids are renumbered over all splits)
    if not job.remap_ids:
        fingerprint = dict(fingerprint, inputs=fingerprint["inputs"][split])
    if gfile.exists(marker):
        reused = _reusable(marker, fingerprint, work_dir)
        if reused is not None:
            _line(progress, split, reused["splits"], "converted before, reused")
            return reused
        gfile.remove(marker)
    outputs = job.outputs(split)
    for name in outputs:  # what an interrupted run of this split left behind
        for stale in output.shards(work_dir, name):
            gfile.remove(stale)

    reader = job.reader(split)
    layout = reader.layout
    encoder = RecordEncoder(layout)
    writers = {name: ShardWriter(work_dir, name, compression=job.compression,
                                 records_per_shard=records_per_shard) for name in outputs}
    counts = {name: {"rows": 0, "clicks": 0, "conversions": 0} for name in outputs}
    ids = IdStats(layout, max_vocab if id_map is None else None)
    bar = _bar(progress, reader.size, split)
    start = time.perf_counter()
    try:
        for chunk in reader:
            bar.update(reader.position - bar.n)
            if id_map is not None:
                chunk = id_map.apply(layout, chunk)
            ids.update(chunk)
            for name, part in route_rows(chunk, split, job.validation_fraction, job.seed):
                writers[name].write(*encoder.encode(part))
                for key, value in label_counts(part).items():
                    counts[name][key] += value
        bar.update(reader.size - bar.n)
        check_rows(split, reader.rows_by_path, reader.counts.as_dict(), counts,
                   job.validation_fraction)
        files = {name: writer.close() for name, writer in writers.items()}
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        bar.close()
    result = {"fingerprint": fingerprint, **ids.as_dict(),
              "source_counts": reader.counts.as_dict(),
              "splits": {name: {"files": files[name], "counts": counts[name],
                                "records": writers[name].shard_records}
                         for name in outputs}}
    fileio.write_json(marker, result)
    seconds = time.perf_counter() - start
    rows = sum(c["rows"] for c in counts.values())
    _line(progress, split, result["splits"],
          f"rows/s={rows / seconds if seconds else float('nan'):.0f} ({seconds:.1f} s)")
    return result


def _read_marker(marker: str, fingerprint: dict):
    """The marker's content if it records this fingerprint; None otherwise (or if a
    killed run left it unreadable)."""
    try:
        result = fileio.read_json(marker)
        return result if result["fingerprint"] == fingerprint else None
    except Exception:  # unreadable, malformed, or another run's: not reusable
        return None


def _reusable(marker: str, fingerprint: dict, work_dir: str):
    """The marker's result if it matches and its shards exist, else None."""
    result = _read_marker(marker, fingerprint)
    try:
        files = [n for s in result["splits"].values() for n in s["files"]]
    except (KeyError, TypeError, AttributeError):
        return None
    if all(gfile.exists(fileio.join(work_dir, n)) for n in files):
        return result
    return None


def _terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def _bar(progress: bool, total: int, split: str):
    """A tqdm bar of bytes read, on a terminal only: a log gets `_line`s instead."""
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr, desc=split,
                disable=not progress or not _terminal(), leave=False)


def _line(progress: bool, split: str, outputs: dict, text: str) -> None:
    """An input split's line in a log (stderr not a terminal): the rows it wrote, by
    output split, e.g. `convert train: rows=900 (train 810, validation 90) ...`."""
    if not progress or _terminal():
        return
    rows = {name: written["counts"]["rows"] for name, written in outputs.items()}
    parts = ", ".join(f"{name} {count}" for name, count in rows.items())
    print(f"convert {split}: rows={sum(rows.values())}"
          + (f" ({parts})" if len(rows) > 1 else "") + f" {text}", file=sys.stderr,
          flush=True)


__all__ = ["convert", "assign_splits", "infer_split", "check_arguments", "validation_mask",
           "route_rows", "label_counts", "SPLITS", "MAX_VOCAB", "MAX_VOCAB_RATIO",
           "SPARSE_VOCAB_FLOOR"]
