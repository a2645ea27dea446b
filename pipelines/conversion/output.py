"""The output folder of a conversion, for every runner: its lock, the finished
conversion it may hold, the staging folder of a replacement, the metadata written
last and the publishing of a staged conversion.

A conversion that replaces a finished one (`overwrite`) is written into `.staging/`
and moved into place only when it has finished, so one that fails leaves the old
one intact; `metadata.json` always comes last, so a folder without it is never taken
for a finished conversion. A refused conversion removes an output folder it created
and left empty.
"""
import contextlib
import os
from typing import Dict, List, Optional

from pwiser_tf import fileio
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines import schema as schema_lib
from pwiser_tf.pipelines.conversion.plan import Plan
from pwiser_tf.pipelines.conversion.rows import layout_schema, vocab_fields
from pwiser_tf.pipelines.readers import idmap

gfile = fileio.gfile
MARKER = ".{}.done.json"  # a finished part of an interrupted local conversion
STAGING_DIR = ".staging"  # a replacement of a finished conversion, until it has finished


@contextlib.contextmanager
def output_lock(output_dir: str):
    """Creates `output_dir` if needed and holds its conversion lock. A refused
    conversion leaves no new folder behind (`fileio.removed_if_refused`)."""
    with fileio.removed_if_refused(output_dir):
        fileio.make_dirs(output_dir, "--output")
        with fileio.exclusive_lock(output_dir, "conversion"):
            yield


def done_before(output_dir: str, fingerprint: dict,
                overwrite: bool) -> Optional[schema_lib.Metadata]:
    """The metadata of a finished conversion of `fingerprint` in `output_dir` (or in
    its staging folder, published now: a run was killed while it published it);
    None when there is none, or when another one may be replaced (`overwrite`; it
    stays until the new one has finished). Another one without `overwrite`, or a
    corrupt one, is an `InputError`."""
    staged = _staged(output_dir, fingerprint)
    if staged is not None:
        return staged
    if not gfile.exists(fileio.join(output_dir, schema_lib.METADATA_FILE)):
        return None
    try:
        metadata, problem = schema_lib.Metadata.load(output_dir), None
    except schema_lib.MetadataError as err:
        metadata, problem = None, str(err)
    if metadata is not None and metadata.extra.get("fingerprint") == fingerprint:
        return metadata
    if not overwrite:
        if problem:
            raise InputError(f"{problem}; the metadata is corrupt: convert again with "
                             f"--overwrite (overwrite=True)")
        raise InputError(f"{output_dir}: holds a finished conversion of other inputs or "
                         f"options; choose another output directory or overwrite it")
    return None


def _staged(output_dir: str, fingerprint: dict) -> Optional[schema_lib.Metadata]:
    staging = fileio.join(output_dir, STAGING_DIR)
    if not gfile.exists(fileio.join(staging, schema_lib.METADATA_FILE)):
        return None
    try:
        metadata = schema_lib.Metadata.load(staging)
    except schema_lib.MetadataError:
        return None
    if metadata.extra.get("fingerprint") != fingerprint:
        return None
    publish(staging, output_dir, metadata)
    return metadata


def work_directory(output_dir: str) -> str:
    """Where a conversion writes: `output_dir`, or its staging folder while a finished
    conversion is there (it stays in place until its replacement has finished)."""
    staging = fileio.join(output_dir, STAGING_DIR)
    if not gfile.exists(fileio.join(output_dir, schema_lib.METADATA_FILE)):
        if gfile.exists(staging):
            fileio.remove_tree(staging)  # a replacement of a conversion no longer there
        return output_dir
    gfile.makedirs(staging)
    return staging


def shards(directory: str, split: str = "*") -> List[str]:
    """The shard files of `split` (all splits by default) in `directory`."""
    return gfile.glob(fileio.join(directory, f"{split}-*.tfrecord*"))


def finish(plan: Plan, work_dir: str, output_dir: str, vocab: Dict[str, int],
           splits: Dict[str, schema_lib.Split], source_counts: dict) -> schema_lib.Metadata:
    """Writes the metadata of a finished conversion (last: it marks it finished),
    removes what the conversion no longer needs and publishes a staged one."""
    metadata = schema_lib.Metadata(
        schema=layout_schema(plan.layout,
                             {n: vocab.get(n, 1) for n in vocab_fields(plan.layout)}),
        splits=splits, source_format=plan.format, compression=plan.compression,
        extra={"fingerprint": plan.fingerprint, "source_counts": source_counts,
               **({"id_maps": idmap.FILE} if plan.remap_ids else {})})
    keep = {name for split in splits.values() for name in split.files}
    for stray in shards(work_dir):  # old shards of splits this conversion lacks
        if os.path.basename(stray) not in keep:
            gfile.remove(stray)
    metadata.save(work_dir)
    for marker in gfile.glob(fileio.join(work_dir, MARKER.format("*"))):
        gfile.remove(marker)  # the metadata now says it all
    if work_dir != output_dir:
        publish(work_dir, output_dir, metadata)
    return metadata


def publish(staging: str, output_dir: str, metadata: schema_lib.Metadata) -> None:
    """Replaces the conversion in `output_dir` by the finished one in `staging`;
    `metadata.json` last. Every step can be repeated (`done_before`)."""
    target = fileio.join(output_dir, schema_lib.METADATA_FILE)
    if gfile.exists(target):
        gfile.remove(target)  # from here on the old conversion is gone
    new = {name for split in metadata.splits.values() for name in split.files}
    if metadata.extra.get("id_maps"):
        new.add(metadata.extra["id_maps"])
    for old in (shards(output_dir) + gfile.glob(fileio.join(output_dir, MARKER.format("*")))
                + gfile.glob(fileio.join(output_dir, idmap.FILE))):
        if os.path.basename(old) not in new:
            gfile.remove(old)
    for name in sorted(new):
        source = fileio.join(staging, name)
        if gfile.exists(source):  # (moved already by a run killed while publishing)
            gfile.rename(source, fileio.join(output_dir, name), overwrite=True)
    gfile.rename(fileio.join(staging, schema_lib.METADATA_FILE), target, overwrite=True)
    fileio.remove_tree(staging)
