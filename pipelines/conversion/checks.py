"""The checks of a conversion's output, for every runner: no input file and no split
may be empty, and no embedding table may be needlessly large.

Vocabulary sizes are max id + 1 over all splits. A field is refused when its size
is over `max_vocab`, or far larger than its distinct ids (`max_vocab_ratio` times,
once above `sparse_vocab_floor`): a few outlying ids would make a mostly empty
table. `IdStats` keeps, per field, the max id and where it was seen and a lower
bound of the distinct ids (the distinct ids of a sample of every chunk); only a
field whose bound leaves the question open costs a counting pass (`check_vocab`'s
`count_distinct`). Both refusals advise `--remap-ids`.
"""
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np

from pwiser_tf.errors import InputError

MAX_VOCAB = 1 << 31       # a field's max id + 1 above this is refused
MAX_VOCAB_RATIO = 1000    # ... and so is one above this many times its distinct ids,
SPARSE_VOCAB_FLOOR = 1 << 20  # ... if it is also above this (a small table costs nothing)
_SAMPLE_ROWS = 1024       # rows of each chunk whose ids bound the distinct count from below
_SAMPLE_MERGE = 1 << 16


def check_rows(split: str, rows_by_path: Dict[str, int], source: Dict[str, int],
               counts: Dict[str, Dict[str, int]], fraction: float) -> None:
    """Every input file of `split` yielded rows (`rows_by_path`: its well-formed rows)
    and every output split it writes holds some (`counts`: their label counts);
    `source` is the split's reader counts."""
    for path, rows in rows_by_path.items():
        if rows == 0:
            malformed = source.get("malformed", 0)
            raise InputError(
                f"{path}: no rows left: --skip-malformed skipped its {malformed} malformed "
                f"line(s)" if malformed else f"{path}: no data rows (empty or only a header)")
    for name, count in counts.items():
        if count.get("rows"):
            continue
        if name == "validation" and split == "train":
            rows = counts.get("train", {}).get("rows", 0)
            why = (f"validation_fraction {fraction} held out none of the {rows} train "
                   f"rows; raise it or give a validation file")
        elif source.get("dropped"):
            why = (f"all its {source['dropped']} rows are conversions without a click, "
                   f"which are dropped (keep them with --conversion-without-click as_click)")
        else:
            why = "no rows are left for it"
        raise InputError(f"split {name!r} would be empty: {why}")


class IdStats:
    """Per field: the max id and where it was seen, and a lower bound of the distinct
    ids (the distinct ids of a sample of every chunk), for the vocabulary checks.
    Statistics of parts (a runner's workers) `merge` into those of the whole."""

    def __init__(self, layout, max_vocab: Optional[int] = None):
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
                self._top(name, top, chunk.where(self._row(chunk, name, column)))
            distinct = sample[np.concatenate([[True], sample[1:] != sample[:-1]])]
            self._add_sample(name, distinct)

    def merge(self, other: "IdStats") -> "IdStats":
        """Adds the statistics of other rows; returns self."""
        for name, top in other.max_ids.items():
            if name not in self.max_ids or top > self.max_ids[name]:
                self._top(name, top, other.max_at[name])
        for name in set(other._sample) | set(other._pending):
            for part in [other._sample.get(name)] + other._pending.get(name, []):
                if part is not None:
                    self._add_sample(name, part)
        return self

    def _top(self, name: str, top: int, where: str) -> None:
        self.max_ids[name], self.max_at[name] = top, where
        if self.max_vocab is not None and top + 1 > self.max_vocab:
            raise InputError(_vocab_message(where, name, top,
                                            f"over the limit of {self.max_vocab:,}"))

    def _add_sample(self, name: str, distinct: np.ndarray) -> None:
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


def vocab_sizes(stats: Iterable[dict]) -> Dict[str, int]:
    """Max id + 1 of every field over the `IdStats.as_dict()` of all splits."""
    vocab: Dict[str, int] = {}
    for part in stats:
        for name, top in part["max_ids"].items():
            vocab[name] = max(vocab.get(name, 1), top + 1)
    return vocab


def _vocab_message(where: str, name: str, top: int, why: str) -> str:
    return (f"{where}: field {name!r} has id {top:,}, so its embedding table would need "
            f"{top + 1:,} rows, {why}; renumber the ids with --remap-ids (remap_ids=True)")


def check_vocab(vocab: Dict[str, int], stats: List[dict],
                count_distinct: Callable[[List[str]], Dict[str, int]], *,
                max_vocab: int = MAX_VOCAB, max_vocab_ratio: float = MAX_VOCAB_RATIO,
                sparse_vocab_floor: int = SPARSE_VOCAB_FLOOR) -> None:
    """Refuses vocabularies over `max_vocab` or far larger than the distinct ids.

    `stats` are the `IdStats.as_dict()` of the splits; `count_distinct(fields)` counts
    the distinct non-zero ids of those fields over all splits (one extra pass, asked
    only for fields whose sampled distinct ids leave the question open).
    """
    def where(name):
        found = [s.get("max_at", {}).get(name) for s in stats
                 if s["max_ids"].get(name, -1) + 1 == vocab[name]]
        return next((w for w in found if w), "the inputs")

    for name, size in vocab.items():
        if size > max_vocab:
            raise InputError(_vocab_message(where(name), name, size - 1,
                                            f"over the limit of {max_vocab:,}"))
    bound = {name: max(s.get("distinct_at_least", {}).get(name, 0) for s in stats)
             for name in vocab}
    open_question = [n for n, size in vocab.items()
                     if size > sparse_vocab_floor and size > max_vocab_ratio * max(1, bound[n])]
    if not open_question:
        return
    counted = count_distinct(open_question)
    for name in open_question:
        distinct = counted[name]
        if vocab[name] > max_vocab_ratio * max(1, distinct):
            raise InputError(_vocab_message(
                where(name), name, vocab[name] - 1,
                f"over {max_vocab_ratio:g} times its {distinct:,} distinct ids"))
