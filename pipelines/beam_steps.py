"""The steps of the Beam converter's pipelines (`beam_convert.py` runs them).

Everything here pickles to any worker: plain data (the conversion's `Plan`), and
the readers' public block API (`Reader.blocks`, `Reader.parse_block`,
`SideFileJoin.side_key` / `side_rows`) in place of their reading loop. Beam itself
is imported inside the steps, so that this module loads without it.
"""
import os
from typing import Dict, Iterable, List

import numpy as np

from pwiser_tf import fileio
from pwiser_tf.pipelines.conversion import output
from pwiser_tf.pipelines.conversion.checks import IdStats
from pwiser_tf.pipelines.conversion.plan import SPLITS, Plan
from pwiser_tf.pipelines.conversion.rows import RecordEncoder, label_counts, route_rows
from pwiser_tf.pipelines.readers.idmap import IdMap

STATS_FILE = ".beam_stats.json"
DISTINCT_FILE = ".beam_distinct.json"


class Steps:
    """The pipelines of one conversion, writing into `work_dir`."""

    def __init__(self, job: Plan, block_bytes: int, work_dir: str):
        self.job, self.block_bytes, self.work_dir = job, block_bytes, work_dir

    def outputs(self) -> List[str]:
        return [s for s in SPLITS if any(s in self.job.outputs(i) for i in self.job.by_split)]

    # sources -------------------------------------------------------------
    def chunks(self, pipeline):
        """PCollection of `(split, path, ParsedBlock)`: every block of every split."""
        import apache_beam as beam

        out = []
        for split in self.job.by_split:
            reader = self.job.reader(split)
            files = [(split, i, p) for i, p in enumerate(reader.main_paths())]
            blocks = (pipeline | f"files {split}" >> beam.Create(files)
                      | f"blocks {split}" >> beam.FlatMap(self._blocks)
                      | f"spread {split}" >> beam.Reshuffle())
            if reader.joins:
                blocks = self._join(pipeline, split, blocks)
            else:
                blocks = blocks | f"no side {split}" >> beam.Map(lambda kv: (kv[1], None))
            out.append(blocks | f"parse {split}" >> beam.ParDo(_dofn("Parse")(self, split)))
        return out | "all splits" >> beam.Flatten()

    def _blocks(self, item):
        split, index, path = item
        for block, first_line, _ in self.job.reader(split).blocks(path, self.block_bytes):
            yield (split, index, first_line), (path, index, first_line, block)

    def _join(self, pipeline, split, blocks):
        """Each block with `{key: side row}` of the keys its lines refer to: a keyed
        join of the side file's rows (`CoGroupByKey`), in place of the `SideTable`."""
        import apache_beam as beam

        job, reader = self.job, self.job.reader(split)

        def wanted(kv):
            block_id, (_, _, _, block) = kv
            keys = {reader.side_key(line.rstrip(b"\r")) for line in block.split(b"\n")[:-1]}
            for key in keys - {None}:
                yield key, block_id

        def to_blocks(kv):
            key, grouped = kv
            rests = list(grouped["side"])
            if rests:
                for block_id in grouped["want"]:
                    yield block_id, (key, rests[0])

        wants = blocks | f"keys {split}" >> beam.FlatMap(wanted)
        side = (pipeline | f"side file {split}" >> beam.Create([split])
                | f"side rows {split}" >> beam.FlatMap(
                    lambda s: job.reader(s).side_rows(self.block_bytes)))
        found = ({"want": wants, "side": side} | f"join keys {split}" >> beam.CoGroupByKey()
                 | f"rows to blocks {split}" >> beam.FlatMap(to_blocks))
        return ({"block": blocks, "side": found} | f"join blocks {split}" >> beam.CoGroupByKey()
                | f"with side {split}" >> beam.FlatMap(
                    lambda kv: [(block, dict(kv[1]["side"])) for block in kv[1]["block"]]))

    # distinct ids: the id map of remap_ids, or the counts of the vocabulary check ---
    def save_id_map(self, pipeline):
        self._distinct(pipeline, lambda tables: IdMap(tables).save(self.work_dir))

    def save_distinct_counts(self, pipeline, names: List[str]):
        self._distinct(pipeline, lambda tables: fileio.write_json(
            fileio.join(self.work_dir, DISTINCT_FILE),
            {name: int(np.count_nonzero(tables[name])) for name in names}))  # 0: "absent"

    def _distinct(self, pipeline, save):
        import apache_beam as beam

        layout = self.job.layout
        (self.chunks(pipeline)
         | "distinct ids" >> beam.Map(lambda item: _distinct(layout, item[2].chunk))
         | "merge ids" >> beam.CombineGlobally(_merge_distinct)
         | "save ids" >> beam.Map(save))

    # records and their statistics -----------------------------------------
    def convert(self, pipeline):
        import apache_beam as beam
        from apache_beam.io.filesystem import CompressionTypes

        compression = self.job.compression
        encoded = self.chunks(pipeline) | "encode" >> beam.ParDo(
            _dofn("Encode")(self)).with_outputs("stats", main="records")
        for split in self.outputs():
            (encoded.records
             | f"only {split}" >> beam.FlatMap(lambda kv, s=split: [kv[1]] if kv[0] == s else [])
             | f"write {split}" >> beam.io.WriteToTFRecord(
                 fileio.join(self.work_dir, split),
                 file_name_suffix=fileio.record_suffix(compression),
                 shard_name_template="-SSSSS-of-NNNNN",
                 compression_type=CompressionTypes.GZIP if compression == "GZIP"
                 else CompressionTypes.UNCOMPRESSED))
        (encoded.stats | "combine stats" >> beam.CombineGlobally(self.merge_stats)
         | "save stats" >> beam.Map(self._save_stats))

    def block_stats(self, split: str, path: str, parsed, chunk, counts: dict) -> dict:
        """The statistics of one parsed block: `chunk` holds its rows (ids renumbered)
        and `counts` the label counts of each output split."""
        ids = IdStats(self.job.layout)
        if chunk is not None:
            ids.update(chunk)
        return {"source": {split: parsed.counts.as_dict()},
                "rows_by_path": {split: {path: parsed.rows}}, "counts": counts, "ids": ids}

    def merge_stats(self, items: Iterable[dict]) -> dict:
        out = {"source": {}, "rows_by_path": {}, "counts": {},
               "ids": IdStats(self.job.layout)}
        for stats in items:
            for key in ("source", "rows_by_path", "counts"):
                _add(out[key], stats[key])
            out["ids"].merge(stats["ids"])
        return out

    def _save_stats(self, stats: dict) -> None:
        fileio.write_json(fileio.join(self.work_dir, STATS_FILE),
                          dict(stats, ids=stats["ids"].as_dict()))

    def read(self, name: str) -> dict:
        """The JSON file `name` that a pipeline saved in `work_dir` (removed)."""
        path = fileio.join(self.work_dir, name)
        data = fileio.read_json(path)
        fileio.gfile.remove(path)
        return data

    def shard_names(self, split: str) -> List[str]:
        return sorted(os.path.basename(f) for f in output.shards(self.work_dir, split))


def _dofn(name: str):
    """The DoFn class `name`, defined on first use (Beam loads only then)."""
    import apache_beam as beam

    if name in _DOFNS:
        return _DOFNS[name]

    class Parse(beam.DoFn):
        """A block (and its side rows) -> `(split, path, ParsedBlock)`."""

        def __init__(self, steps, split):
            self.steps, self.split = steps, split

        def setup(self):
            self.reader = self.steps.job.reader(self.split)

        def process(self, item):
            (path, index, first_line, block), side = item
            yield self.split, path, self.reader.parse_block(block, first_line, path, index,
                                                            side_rows=side)

    class Encode(beam.DoFn):
        """`(split, path, ParsedBlock)` -> `(output split, record)`s and the block's stats."""

        def __init__(self, steps):
            self.steps = steps

        def setup(self):
            job = self.steps.job
            self.encoder = RecordEncoder(job.layout)
            self.id_map = IdMap.load(self.steps.work_dir) if job.remap_ids else None

        def process(self, item):
            split, path, parsed = item
            job, chunk = self.steps.job, parsed.chunk
            counts = {}
            if chunk is not None and len(chunk):
                if self.id_map is not None:
                    chunk = self.id_map.apply(job.layout, chunk)
                for name, part in route_rows(chunk, split, job.validation_fraction, job.seed):
                    data, offsets = self.encoder.encode(part)
                    for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
                        yield name, data[a:b]
                    counts[name] = label_counts(part)
            yield beam.pvalue.TaggedOutput(
                "stats", self.steps.block_stats(split, path, parsed, chunk, counts))

    _DOFNS.update(Parse=Parse, Encode=Encode)
    return _DOFNS[name]


_DOFNS: Dict[str, type] = {}


def _add(into: dict, other: dict) -> dict:
    for key, value in other.items():
        into[key] = _add(into.get(key, {}), value) if isinstance(value, dict) else \
            into.get(key, 0) + value
    return into


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


__all__ = ["Steps", "STATS_FILE", "DISTINCT_FILE"]
