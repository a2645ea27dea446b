"""`convert_beam`: the converter as an Apache Beam pipeline (any Beam runner).

It writes what `convert` writes (the same records: the same multiset per split;
the shards may be cut differently), with the same readers:

1. Each main file is cut into blocks of whole lines (`text_blocks`, about
   `block_bytes` each, numbered like the local reader numbers its lines), and
   the blocks are spread over the workers.
2. The raw formats' joins are keyed joins: every block names the side-file keys
   its lines refer to (`reader.side_key`: the search id of an AliExpress item,
   the `common_feature_index` of an Ali-CCP skeleton row); a `CoGroupByKey`
   with the side file's rows (user rows, common features) sends each block the
   side rows it needs, and a second one brings them together.
3. The reader's own `_block` parses each block (with those side rows in place
   of its `SideTable`) and applies the label policy; then, as locally, the ids
   are renumbered (`remap_ids`: a first pipeline collects the id map and saves
   `id_maps.npz`, the second applies it), the validation split is carved by the
   same hash of the row id (`validation_mask`) and the records are encoded by
   `ExampleEncoder`.
4. `WriteToTFRecord` writes each split as `{split}-SSSSS-of-NNNNN.tfrecord[.gz]`
   (Beam writes temporary files and renames them when the pipeline succeeds);
   `metadata.json` is written last, by the launching process, from the counts
   and largest ids the pipeline combined.

A rerun with the same inputs and options returns the finished conversion;
an interrupted one starts over (the runner retries failed work items itself).
As with `convert`, `overwrite` writes into `.staging/` and replaces a finished
conversion only when the new one has finished.

Example:

>>> convert_beam("ali-ccp-raw", ["sample_skeleton_train.csv",
...              "common_features_train.csv"], "gs://bucket/ali_ccp",
...              runner="DataflowRunner", beam_options={"project": "p",
...              "region": "europe-west4", "temp_location": "gs://bucket/tmp"})
...                                                     # doctest: +SKIP
"""
import json
import os
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from pwiser_tf import fileio
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines import schema as schema_lib

DEFAULT_BLOCK_BYTES = 8 << 20
_STATS_FILE = ".beam_stats.json"


def beam_options_from(pairs: Sequence[str]) -> Dict[str, str]:
    """`["KEY=VALUE", ...]` (`--beam-option`) -> `{KEY: VALUE}`."""
    options = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--beam-option {pair!r}: expected KEY=VALUE")
        options[key.lstrip("-")] = value
    return options


def pipeline_options(runner: str, beam_options: Optional[Dict[str, str]] = None):
    """Beam `PipelineOptions` for `runner` (`direct` = the DirectRunner) and KEY=VALUEs."""
    from apache_beam.options.pipeline_options import PipelineOptions

    runner = "DirectRunner" if runner == "direct" else runner
    flags = [f"--runner={runner}"] + [f"--{k}={v}" for k, v in (beam_options or {}).items()]
    return PipelineOptions(flags)


def convert_beam(format: str, inputs, output_dir: str, *, runner: str = "direct",
                 beam_options: Optional[Dict[str, str]] = None,
                 validation_fraction: float = 0.0, seed: int = 0, compression: str = "",
                 skip_malformed: bool = False, conversions_without_click: str = "drop",
                 remap_ids: bool = False, overwrite: bool = False,
                 block_bytes: int = DEFAULT_BLOCK_BYTES,
                 **reader_options) -> schema_lib.Metadata:
    """Converts `inputs` of `format` into `output_dir` with a Beam pipeline.

    The arguments are `convert`'s (`records_per_shard` aside: the runner cuts the
    shards), plus `runner` (`direct`, or a Beam runner's name such as
    `DataflowRunner`, `FlinkRunner`, `SparkRunner`) and `beam_options`
    (`{KEY: VALUE}` pipeline options, e.g. `direct_num_workers`). Needs the
    `beam` extra (`pip install "pwiser-tf[beam]"`).
    """
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # Beam warns at import about Google Cloud clients
    try:
        import apache_beam  # noqa: F401
    except ImportError:
        raise InputError("a Beam runner needs Apache Beam: pip install 'pwiser-tf[beam]'") \
            from None
    finally:
        root.setLevel(level)
    from pwiser_tf.pipelines.convert import (_absolute, _plain, _publish, check_arguments,
                                             output_lock, publish_staged, work_directory)
    from pwiser_tf.pipelines.readers import open_reader

    by_split, compression = check_arguments(format, inputs, compression,
                                            validation_fraction)
    options = dict(skip_malformed=skip_malformed,
                   conversions_without_click=conversions_without_click, **reader_options)
    layouts = {split: open_reader(format, paths, **options).layout
               for split, paths in by_split.items()}
    if len(set(layouts.values())) > 1:
        raise InputError("the splits' files have different columns")
    layout = next(iter(layouts.values()))
    fingerprint = _plain({
        "format": format, "validation_fraction": validation_fraction, "seed": seed,
        "compression": compression, "remap_ids": remap_ids, "runner": "beam",
        "options": {k: v for k, v in sorted(options.items())},
        "inputs": {s: [_absolute(p) for p in paths] for s, paths in by_split.items()}})
    gfile = fileio.gfile
    with output_lock(output_dir):
        done = publish_staged(output_dir, fingerprint) or \
            _finished(output_dir, fingerprint, overwrite)
        if done is not None:
            return done
        # a finished conversion stays in place until its replacement has finished
        work_dir = work_directory(output_dir)
        for stale in gfile.glob(fileio.join(work_dir, "*.tfrecord*")):
            gfile.remove(stale)
        job = _Job(format, by_split, options, block_bytes, work_dir)
        if remap_ids:
            _run(job.collect_ids, runner, beam_options, work_dir)
        _run(lambda p: job.convert(p, validation_fraction, seed, compression, remap_ids),
             runner, beam_options, work_dir)
        stats = fileio.read_json(fileio.join(work_dir, _STATS_FILE))
        gfile.remove(fileio.join(work_dir, _STATS_FILE))
        metadata = _write_metadata(work_dir, layout, format, compression, stats, fingerprint,
                                   remap_ids, validation_fraction, by_split)
        if work_dir != output_dir:
            _publish(work_dir, output_dir, metadata)
        return metadata


def _run(build, runner, beam_options, output_dir: str) -> None:
    import logging

    import apache_beam as beam

    # The DirectRunner logs a worker's exception with its traceback; the error
    # reaches the user once, as one line, below. Other runners keep their logs.
    quiet = runner in ("direct", "DirectRunner")
    logger = logging.getLogger("apache_beam")
    level = logger.level
    if quiet:
        logger.setLevel(logging.CRITICAL)
    try:
        with beam.Pipeline(options=pipeline_options(runner, beam_options)) as pipeline:
            build(pipeline)
    except InputError as err:  # re-raised by the runner with " [while running '...']"
        raise InputError(str(err).split(" [while running")[0]) from None
    except Exception as err:  # a worker's InputError arrives wrapped by the runner
        message = str(err)
        marker = "InputError: "
        if marker in message:
            line = message.split(marker, 1)[1].splitlines()[0]
            raise InputError(line.split(" [while running")[0].strip(" '\"]")) from None
        raise
    finally:
        logger.setLevel(level)
        for temp in fileio.gfile.glob(fileio.join(output_dir, "beam-temp-*")):
            fileio.gfile.rmtree(temp)  # what a failed write leaves


def _finished(output_dir, fingerprint, overwrite):
    path = fileio.join(output_dir, schema_lib.METADATA_FILE)
    if not fileio.gfile.exists(path):
        return None
    try:
        metadata = schema_lib.Metadata.load(output_dir)
    except schema_lib.MetadataError:
        metadata = None
    if metadata is not None and metadata.extra.get("fingerprint") == fingerprint:
        return metadata
    if not overwrite:
        raise InputError(f"{output_dir}: holds a finished conversion of other inputs or "
                         f"options; choose another output directory or overwrite it")
    return None  # replaced once the new conversion has finished


class _Job:
    """The pipeline's steps; plain data only, so that it pickles to any worker."""

    def __init__(self, format, by_split, options, block_bytes, output_dir):
        self.format, self.by_split, self.options = format, by_split, options
        self.block_bytes, self.output_dir = block_bytes, output_dir

    # sources -------------------------------------------------------------
    def chunks(self, pipeline):
        """PCollection of `(split, Chunk, source counts)`: every block of every split."""
        import apache_beam as beam

        out = []
        for split, paths in self.by_split.items():
            reader = self._reader(split)
            files = [(split, i, p) for i, p in enumerate(reader.main_paths())]
            blocks = (pipeline | f"files {split}" >> beam.Create(files)
                      | f"blocks {split}" >> beam.FlatMap(self._blocks)
                      | f"spread {split}" >> beam.Reshuffle())
            if reader.joins:
                blocks = self._join(pipeline, split, reader.side_path(), blocks)
            else:
                blocks = blocks | f"no side {split}" >> beam.Map(lambda kv: (kv[1], {}))
            out.append(blocks | f"parse {split}" >> beam.ParDo(_Parse(self, split)))
        return out | "all splits" >> beam.Flatten()

    def _reader(self, split):
        from pwiser_tf.pipelines.readers import open_reader

        return open_reader(self.format, self.by_split[split], **self.options)

    def _blocks(self, item):
        from pwiser_tf.pipelines.readers.base import text_blocks

        split, index, path = item
        reader = self._reader(split)
        reader._path = path
        for block, first_line, _ in text_blocks(path, self.block_bytes, reader.long_line):
            yield (split, index, first_line), (path, index, first_line, block)

    def _join(self, pipeline, split, side_path, blocks):
        import apache_beam as beam

        reader = self._reader(split)

        def wanted(kv):
            block_id, (_, _, _, block) = kv
            keys = {reader.side_key(line.rstrip(b"\r")) for line in block.split(b"\n")[:-1]}
            for key in keys - {None}:
                yield key, block_id

        def side_rows(path):
            from pwiser_tf.pipelines.readers.base import text_blocks

            for block, _, _ in text_blocks(path, self.block_bytes, lambda line: None):
                for line in block.split(b"\n")[:-1]:
                    line = line.rstrip(b"\r")
                    cut = line.find(b",")
                    if cut > 0:
                        yield line[:cut], line[cut + 1:]

        def to_blocks(kv):
            key, grouped = kv
            rests = list(grouped["side"])
            if rests:  # the first row of a key, as the local SideTable's index keeps it
                for block_id in grouped["want"]:
                    yield block_id, (key, rests[0])

        wants = blocks | f"keys {split}" >> beam.FlatMap(wanted)
        side = (pipeline | f"side file {split}" >> beam.Create([side_path])
                | f"side rows {split}" >> beam.FlatMap(side_rows))
        found = ({"want": wants, "side": side} | f"join keys {split}" >> beam.CoGroupByKey()
                 | f"rows to blocks {split}" >> beam.FlatMap(to_blocks))
        return ({"block": blocks, "side": found} | f"join blocks {split}" >> beam.CoGroupByKey()
                | f"with side {split}" >> beam.FlatMap(
                    lambda kv: [(block, dict(kv[1]["side"])) for block in kv[1]["block"]]))

    # pass 1 of remap_ids -------------------------------------------------
    def collect_ids(self, pipeline):
        import apache_beam as beam

        layout = self._reader(next(iter(self.by_split))).layout
        (self.chunks(pipeline)
         | "distinct ids" >> beam.Map(lambda item: _distinct(layout, item[1]))
         | "merge ids" >> beam.CombineGlobally(_merge_distinct)
         | "save id map" >> beam.Map(self._save_ids))

    def _save_ids(self, tables):
        from pwiser_tf.pipelines.readers.idmap import IdMap

        IdMap({name: np.asarray(ids, np.int64) for name, ids in tables.items()}).save(
            self.output_dir)

    # pass 2: records ----------------------------------------------------
    def convert(self, pipeline, fraction, seed, compression, remap_ids):
        import apache_beam as beam
        from apache_beam.io.filesystem import CompressionTypes

        outputs = [s for s in ("train", "validation", "test") if s in self.by_split or
                   (s == "validation" and fraction > 0 and "train" in self.by_split)]
        encoded = self.chunks(pipeline) | "encode" >> beam.ParDo(
            _Encode(self, fraction, seed, remap_ids)).with_outputs("stats", main="records")
        suffix = ".tfrecord.gz" if compression == "GZIP" else ".tfrecord"
        for split in outputs:
            (encoded.records
             | f"only {split}" >> beam.FlatMap(lambda kv, s=split: [kv[1]] if kv[0] == s else [])
             | f"write {split}" >> beam.io.WriteToTFRecord(
                 fileio.join(self.output_dir, split), file_name_suffix=suffix,
                 shard_name_template="-SSSSS-of-NNNNN",
                 compression_type=CompressionTypes.GZIP if compression == "GZIP"
                 else CompressionTypes.UNCOMPRESSED))
        (encoded.stats | "combine stats" >> beam.CombineGlobally(_merge_stats)
         | "save stats" >> beam.Map(lambda stats: fileio.write_json(
             fileio.join(self.output_dir, _STATS_FILE), dict(stats, outputs=outputs))))


class _Parse:
    """A block (and its side rows) -> `(split, Chunk, source counts)` by the reader's `_block`."""

    def __new__(cls, job, split):
        import apache_beam as beam

        class Parse(beam.DoFn):
            def setup(self):
                self.reader = job._reader(split)

            def process(self, item):
                from pwiser_tf.pipelines.readers.base import Counts

                (path, index, first_line, block), side = item
                reader = self.reader
                reader.counts = Counts()
                reader._path = path
                reader.side = _SideRows(side)
                chunk = reader._block(block, first_line, path, index)
                if chunk is not None:
                    chunk.path = path
                    chunk = reader._label_policy(chunk)
                yield split, chunk, reader.counts.as_dict()

        return Parse()


class _SideRows:
    """The side rows a block needs, with `SideTable.lookup`'s interface."""

    def __init__(self, rows: Dict[bytes, bytes]):
        self.rows = rows

    def lookup(self, keys: Sequence[bytes]) -> List[Optional[bytes]]:
        return [self.rows.get(key) for key in keys]


class _Encode:
    """`(split, Chunk, counts)` -> `(output split, record)` and the chunk's statistics."""

    def __new__(cls, job, fraction, seed, remap_ids):
        import apache_beam as beam

        class Encode(beam.DoFn):
            def setup(self):
                from pwiser_tf.pipelines.convert import _vocab_fields
                from pwiser_tf.pipelines.readers.idmap import IdMap
                from pwiser_tf.pipelines.records import ExampleEncoder

                self.layout = job._reader(next(iter(job.by_split))).layout
                self.encoder = ExampleEncoder(self.layout.schema(
                    {n: 1 for n in _vocab_fields(self.layout)}))
                self.id_map = IdMap.load(job.output_dir) if remap_ids else None

            def process(self, item):
                from pwiser_tf.pipelines.convert import _columns, label_counts, route_rows

                split, chunk, source = item
                stats = {"source": {split: source}, "counts": {}, "max_ids": {}}
                if chunk is not None and len(chunk):
                    if self.id_map is not None:
                        chunk = self.id_map.apply(self.layout, chunk)
                    stats["max_ids"] = _max_ids(self.layout, chunk)
                    for name, part in route_rows(chunk, split, fraction, seed):
                        data, offsets = self.encoder.encode(_columns(self.layout, part))
                        for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
                            yield name, data[a:b]
                        stats["counts"][name] = label_counts(part)
                yield beam.pvalue.TaggedOutput("stats", stats)

        return Encode()


def _max_ids(layout, chunk) -> Dict[str, int]:
    tops = {}
    if layout.categorical:
        tops.update(zip(layout.categorical, chunk.categorical.max(axis=0).tolist()))
    for name, _ in layout.multi_valued:
        values = chunk.multi_valued[name].values
        if len(values):
            tops[name] = int(values.max())
    return tops


def _add(into: dict, other: dict) -> dict:
    for key, value in other.items():
        into[key] = _add(into.get(key, {}), value) if isinstance(value, dict) else \
            into.get(key, 0) + value
    return into


def _merge_stats(items: Iterable[dict]) -> dict:
    out = {"source": {}, "counts": {}, "max_ids": {}}
    for stats in items:
        _add(out["source"], stats["source"])
        _add(out["counts"], stats["counts"])
        for name, top in stats["max_ids"].items():
            out["max_ids"][name] = max(out["max_ids"].get(name, 0), top)
    return out


def _distinct(layout, chunk) -> Dict[str, np.ndarray]:
    if chunk is None:
        return {}
    columns = {name: chunk.categorical[:, j] for j, name in enumerate(layout.categorical)}
    columns.update({name: chunk.multi_valued[name].values for name, _ in layout.multi_valued})
    return {name: np.unique(values) for name, values in columns.items()}


def _merge_distinct(items: Iterable[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    parts: Dict[str, list] = {}
    for tables in items:
        for name, ids in tables.items():
            parts.setdefault(name, []).append(np.asarray(ids, np.int64))
    # 0 always first: it stands for "absent" (as IdMap.collect keeps it)
    return {name: np.unique(np.concatenate([np.zeros([1], np.int64)] + ids))
            for name, ids in parts.items()}


def _write_metadata(output_dir, layout, format, compression, stats, fingerprint, remap_ids,
                    fraction, by_split) -> schema_lib.Metadata:
    from pwiser_tf.pipelines.convert import _vocab_fields

    vocab = {name: max(1, top + 1) for name, top in stats["max_ids"].items()}
    splits = {}
    for name in stats["outputs"]:
        files = sorted(os.path.basename(f) for f in fileio.gfile.glob(
            fileio.join(output_dir, f"{name}-*-of-*.tfrecord*")))
        counts = stats["counts"].get(name, {"rows": 0, "clicks": 0, "conversions": 0})
        if not counts.get("rows"):
            raise InputError(f"split {name!r} would be empty: no rows are left for it"
                             + (f" (validation_fraction {fraction} held out none)"
                                if name == "validation" else ""))
        splits[name] = schema_lib.Split(files=files, counts=counts)
    metadata = schema_lib.Metadata(
        schema=layout.schema({n: vocab.get(n, 1) for n in _vocab_fields(layout)}),
        splits=splits, source_format=format, compression=compression,
        extra={"fingerprint": fingerprint, "source_counts": stats["source"],
               **({"id_maps": "id_maps.npz"} if remap_ids else {})})
    metadata.save(output_dir)  # last: marks the conversion finished
    return metadata


__all__ = ["convert_beam", "beam_options_from", "pipeline_options"]
