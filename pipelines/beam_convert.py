"""`convert_beam`: the converter as an Apache Beam pipeline (any Beam runner).

It writes what `convert` writes (the same records: the same multiset per split;
the shards may be cut differently), with the same readers and the same core
(`pipelines/conversion/`): the same argument checks, the same refusal of one file
given as two splits and of empty files or splits, the same vocabulary checks, the
same fingerprint (with every input's size and modification time) and metadata.
The pipeline's steps are in `beam_steps.py`:

1. Each main file is cut into blocks of whole lines (`Reader.blocks`, about
   `block_bytes` each, numbered like the local reader numbers its lines), and
   the blocks are spread over the workers.
2. The raw formats' joins are keyed joins: every block names the side-file keys
   its lines refer to (`reader.side_key`: the search id of an AliExpress item,
   the `common_feature_index` of an Ali-CCP skeleton row); a `CoGroupByKey`
   with the side file's rows (user rows, common features) sends each block the
   side rows it needs, and a second one brings them together.
3. The reader's `parse_block` parses each block (with those side rows in place
   of its `SideTable`) and applies the label policy; then, as locally, the ids
   are renumbered (`remap_ids`: a first pipeline collects the id map and saves
   `id_maps.npz`, the second applies it), the validation split is carved by the
   same hash of the row id (`validation_mask`) and the records are encoded by
   `ExampleEncoder`.
4. `WriteToTFRecord` writes each split as `{split}-SSSSS-of-NNNNN.tfrecord[.gz]`
   (Beam writes temporary files and renames them when the pipeline succeeds);
   the launching process then checks the counts, rows per file and id statistics
   that the pipeline combined and writes `metadata.json` last.

A rerun with the same inputs (the same paths, sizes and modification times) and
options returns the finished conversion; an interrupted one starts over (the
runner retries failed work items itself).
As with `convert`, `overwrite` writes into `.staging/` and replaces a finished
conversion only when the new one has finished.

Example:

>>> convert_beam("ali-ccp-raw", ["sample_skeleton_train.csv",
...              "common_features_train.csv"], "gs://bucket/ali_ccp",
...              runner="DataflowRunner", beam_options={"project": "p",
...              "region": "europe-west4", "temp_location": "gs://bucket/tmp"})
...                                                     # doctest: +SKIP
"""
from typing import Dict, Optional, Sequence

from pwiser_tf import fileio
from pwiser_tf import options as choices
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines import schema as schema_lib
from pwiser_tf.pipelines.conversion import output
from pwiser_tf.pipelines.conversion.checks import (MAX_VOCAB, MAX_VOCAB_RATIO,
                                                   SPARSE_VOCAB_FLOOR, check_rows,
                                                   check_vocab, vocab_sizes)
from pwiser_tf.pipelines.conversion.plan import SPLITS, plan

DEFAULT_BLOCK_BYTES = 8 << 20


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
                 skip_malformed: bool = False, conversion_without_click: str = choices.DROP,
                 remap_ids: bool = False, overwrite: bool = False,
                 block_bytes: int = DEFAULT_BLOCK_BYTES, max_vocab: int = MAX_VOCAB,
                 max_vocab_ratio: float = MAX_VOCAB_RATIO,
                 sparse_vocab_floor: int = SPARSE_VOCAB_FLOOR,
                 **reader_options) -> schema_lib.Metadata:
    """Converts `inputs` of `format` into `output_dir` with a Beam pipeline.

    The arguments are `convert`'s (`records_per_shard` and `progress` aside: the
    runner cuts the shards), plus `runner` (`direct`, or a Beam runner's name such as
    `DataflowRunner`, `FlinkRunner`, `SparkRunner`), `beam_options` (`{KEY: VALUE}`
    pipeline options, e.g. `direct_num_workers`) and `block_bytes` (text per work
    item). Needs the `beam` extra (`pip install "pwiser-tf[beam]"`).
    """
    _import_beam()
    from pwiser_tf.pipelines.beam_steps import DISTINCT_FILE, STATS_FILE, Steps

    job = plan(format, inputs, compression=compression,
               validation_fraction=validation_fraction, seed=seed, remap_ids=remap_ids,
               skip_malformed=skip_malformed,
               conversion_without_click=conversion_without_click,
               reader_options=reader_options, runner={"runner": "beam"})
    with output.output_lock(output_dir):
        done = output.done_before(output_dir, job.fingerprint, overwrite)
        if done is not None:
            return done
        # a finished conversion stays in place until its replacement has finished
        work_dir = output.work_directory(output_dir)
        for stale in output.shards(work_dir):
            fileio.gfile.remove(stale)
        steps = Steps(job, block_bytes, work_dir)
        if remap_ids:
            _run(steps.save_id_map, runner, beam_options, work_dir)
        _run(steps.convert, runner, beam_options, work_dir)
        stats = steps.read(STATS_FILE)
        for split in (s for s in SPLITS if s in job.by_split):
            rows_by_path = {path: 0 for path in job.reader(split).main_paths()}
            rows_by_path.update(stats["rows_by_path"].get(split, {}))
            check_rows(split, rows_by_path, stats["source"].get(split, {}),
                       {name: stats["counts"].get(name, {"rows": 0})
                        for name in job.outputs(split)}, validation_fraction)
        vocab = vocab_sizes([stats["ids"]])
        if not remap_ids:
            def count_distinct(names):
                _run(lambda pipeline: steps.save_distinct_counts(pipeline, names), runner,
                     beam_options, work_dir)
                return steps.read(DISTINCT_FILE)

            check_vocab(vocab, [stats["ids"]], count_distinct, max_vocab=max_vocab,
                        max_vocab_ratio=max_vocab_ratio, sparse_vocab_floor=sparse_vocab_floor)
        splits = {name: schema_lib.Split(files=steps.shard_names(name),
                                         counts=stats["counts"][name])
                  for name in steps.outputs()}
        return output.finish(job, work_dir, output_dir, vocab, splits, stats["source"])


def _import_beam() -> None:
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


def _run(build, runner, beam_options, work_dir: str) -> None:
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
        for temp in fileio.gfile.glob(fileio.join(work_dir, "beam-temp-*")):
            fileio.gfile.rmtree(temp)  # what a failed write leaves


__all__ = ["convert_beam", "beam_options_from", "pipeline_options"]
