r"""Streaming readers of the public AliExpress and Ali-CCP file formats.

`open_reader(format, paths)` returns a `Reader` over the files of one split. A
reader streams column chunks (`Chunk`) of numpy arrays and never holds a whole
file in memory:

- `categorical`: int64 `[n, C]`, single-valued ids, in `reader.layout.categorical` order;
- `numerical`: float32 `[n, N]`, in `reader.layout.numerical` order;
- `multi_valued`: `{field: Ragged}`, every id of a multi-valued field as flat
  `values` plus per-row `lengths` (and flat float `weights` where the source has them);
- `labels`: int64 `[n]` per label: `click`, `conversion` (click AND conversion,
  the CTCVR label) and `intent` when a processed CSV carries that column;
- `row_id`: int64 `[n]`, the id that the validation split hashes (the search id
  of AliExpress, the sample id of raw Ali-CCP, the line number otherwise).

`reader.layout` names the fields; with the vocabulary sizes (which the converter
computes over all splits) it becomes a `pipelines.schema.Schema`.
`reader.counts` keeps `rows` (rows yielded), `clicks`, `conversions`,
`conversions_without_click` (rows with click 0 and conversion 1 in the source),
`dropped` and `malformed`.

Formats and the paths each takes (one split):

| format | paths |
|---|---|
| `aliexpress-csv` | processed 82-column CSVs (MTReclib), header first |
| `aliexpress-raw` | `<cc>_user_<split>.csv` and `<cc>_item_<split>.csv` (no header) |
| `ali-ccp-csv` | torch-rechub 33-column CSVs, header first |
| `aitm-csv` | AITM 20-column CSVs, with or without a header line |
| `esmm-text` | PaddleRec ESMM text `line_no,click,conversion,field:id,...` |
| `ali-ccp-raw` | `sample_skeleton_<split>.csv` and `common_features_<split>.csv` |

A processed CSV whose header ends with an `intent` column passes it through as
the `intent` label. A malformed line raises `InputError` naming file and line;
with `skip_malformed=True` it is skipped and counted. A source row with click 0
and conversion 1 is counted in `conversions_without_click` and handled by the
policy `conversion_without_click` (`pwiser_tf.options`): by default `"drop"`, as
every public pipeline does; `"as_click"` keeps it as a click and a conversion;
`"error"` refuses it, naming its file and line.

A runner that spreads the work itself (Apache Beam) uses a reader's two public
steps: `blocks(path)` cuts a file into blocks of whole lines and
`parse_block(...)` parses one; see `Reader`.

Example (an AITM file without a header; its second row converts without a click):

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "train.csv")
>>> with open(path, "w") as f:
...     _ = f.write("1,1," + ",".join(["3"] * 18) + "\n0,1," + ",".join(["4"] * 18) + "\n")
>>> reader = open_reader("aitm-csv", [path])
>>> [chunk.categorical.shape for chunk in reader], reader.layout.categorical[:2]
([(1, 18)], ('101', '121'))
>>> reader.counts.as_dict()["conversions_without_click"], reader.counts.rows
(1, 1)
"""
from typing import Sequence

from pwiser_tf import options as choices
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.readers.base import (Chunk, Counts, Layout, ParsedBlock, Ragged,
                                              Reader)

_FORMATS = {
    "aliexpress-csv": ("pwiser_tf.pipelines.readers.aliexpress", "AliExpressCsvReader"),
    "aliexpress-raw": ("pwiser_tf.pipelines.readers.aliexpress", "AliExpressRawReader"),
    "ali-ccp-csv": ("pwiser_tf.pipelines.readers.ali_ccp", "RechubCsvReader"),
    "aitm-csv": ("pwiser_tf.pipelines.readers.ali_ccp", "AitmCsvReader"),
    "esmm-text": ("pwiser_tf.pipelines.readers.ali_ccp", "EsmmTextReader"),
    "ali-ccp-raw": ("pwiser_tf.pipelines.readers.ali_ccp_raw", "AliCcpRawReader"),
}
FORMATS = tuple(_FORMATS)


def reader_class(format: str):
    """The `Reader` subclass of a format name."""
    import importlib

    if format not in _FORMATS:
        raise InputError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    module, name = _FORMATS[format]
    return getattr(importlib.import_module(module), name)


def open_reader(format: str, paths: Sequence[str], *, skip_malformed: bool = False,
                conversion_without_click: str = choices.DROP, **options) -> Reader:
    """A `Reader` streaming the files of one split.

    Args:
      format: one of `FORMATS`.
      paths: the files of the split (for the raw formats, both files of the pair).
      skip_malformed: skip and count malformed lines instead of raising `InputError`.
      conversion_without_click: a row with click 0 and conversion 1: `"drop"` it
        (default), keep it `"as_click"` (a click and a conversion), or refuse it
        (`"error"`, naming its file and line).
      **options: format options, e.g. `block_bytes` (text read per chunk) or, for
        `ali-ccp-raw`, `cache_entries` and `index_dir` (see `ali_ccp_raw`).
    """
    if RENAMED_OPTION in options:
        raise InputError(RENAMED_MESSAGE)
    return reader_class(format)(list(paths), skip_malformed=skip_malformed,
                                conversion_without_click=conversion_without_click,
                                **options)


# The policy's earlier name (and its value "click", now "as_click"), refused by name.
RENAMED_OPTION = "conversions_without_click"
RENAMED_MESSAGE = ("conversions_without_click (--conversions-without-click) is now "
                   "conversion_without_click (--conversion-without-click), with the values "
                   f"{', '.join(choices.CONVERSION_WITHOUT_CLICK_IN_CONVERT)} "
                   "('click' is now 'as_click')")


__all__ = ["open_reader", "reader_class", "FORMATS", "Reader", "Chunk", "Ragged", "Layout",
           "Counts", "ParsedBlock"]
