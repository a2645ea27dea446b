"""Ali-CCP raw release: `sample_skeleton_<split>.csv` joined with `common_features_<split>.csv`.

Skeleton line: `sample_id,click,conversion,common_feature_index,feature_num,feature_list`;
common-features line: `common_feature_index,feature_num,feature_list`; a feature
list is `field\\x02id\\x03value` tokens separated by `\\x01`. No header.

The join: the skeleton is sorted by `common_feature_index` and so is the
common-features file, so the features of a user are read once, in step with the
skeleton, through a `SideTable` with a bounded cache (`cache_entries`); if the
files are not in the same order the table falls back to an on-disk index (see
`join.py`, `index_dir`). Neither file is ever loaded whole.

Layout: the single-valued fields (user 101..129, item 205, 206, 207, 216, the
crosses 508, 509, 702, 853 and position 301) as categorical ids, 0 where a row
lacks the field; the values of the crosses as numerical `D508..D853`; the
multi-valued 210 and 109_14, 110_14, 127_14, 150_14 kept whole, with their values.
Row id: `sample_id`.
"""
import os

import numpy as np

from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.readers.base import Chunk, Layout, Reader, parse_ints
from pwiser_tf.pipelines.readers.join import SideFileJoin
from pwiser_tf.pipelines.readers.table import drop_bad_cells
from pwiser_tf.pipelines.readers.tokens import MULTI, SINGLE, VALUED, FeatureTokens, token_checks


class AliCcpRawReader(SideFileJoin, Reader):
    format = "ali-ccp-raw"

    def _open(self) -> Layout:
        base = [os.path.basename(p) for p in self.paths]
        self.skeletons = [p for p, b in zip(self.paths, base) if "skeleton" in b]
        self.commons = [p for p, b in zip(self.paths, base) if "common_feature" in b]
        if len(self.commons) != 1 or not self.skeletons or \
                len(self.skeletons) + len(self.commons) != len(self.paths):
            raise InputError(f"ali-ccp-raw takes sample_skeleton_<split>.csv file(s) and one "
                             f"common_features_<split>.csv, got {base}")
        self._tokens = FeatureTokens((b"\x01", b"\x02", b"\x03"), with_values=True)
        return Layout("ali-ccp", SINGLE, tuple(f"D{name}" for name in VALUED),
                      tuple((name, True) for name in MULTI))

    def main_paths(self):
        return self.skeletons

    def side_path(self):
        return self.commons[0]

    def side_key(self, line):
        parts = line.split(b",", 5)
        return parts[3] if len(parts) == 6 else None

    def _block(self, block: bytes, first_line: int, path: str, index: int):
        heads, keys, lists, lines = [], [], [], []
        for offset, line in enumerate(block.split(b"\n")[:-1]):
            line = line.rstrip(b"\r")
            if not line.strip():
                continue
            parts = line.split(b",", 5)
            reason = None
            if len(parts) != 6:
                reason = f"{len(parts)} columns, expected 6"
            else:
                head = parse_ints([parts[0], parts[1], parts[2], parts[4]])
                if head is None:
                    reason = ("sample_id, click, conversion or feature_num is not an integer "
                              "in int64")
            if reason is None and _count(parts[5]) != head[3]:
                reason = f"feature_num is {head[3]}, the list holds {_count(parts[5])}"
            if reason:
                self.malformed(path, first_line + offset, reason)
                continue
            heads.append(head)
            keys.append(parts[3])
            lists.append(parts[5])
            lines.append(first_line + offset)
        if not heads:
            return None
        texts, kept, users = [], [], self.side.lookup(keys)
        for i, user in enumerate(users):
            reason = "common_feature_index not in the common-features file"
            if user is not None:
                number, _, features = user.partition(b",")
                reason = None if number.isdigit() and int(number) == _count(features) else \
                    f"common features of {keys[i][:40]!r}: feature_num does not match its list"
            if reason:
                self.malformed(path, lines[i], reason)
                continue
            texts.append(b"\x01".join(t for t in (lists[i], features) if t))
            kept.append(i)
        if not kept:
            return None
        heads = np.asarray(heads, np.int64)[kept]
        lines = np.asarray(lines, np.int64)[kept]
        keep, categorical, numerical, multi = self._tokens.parse(texts, lines, path,
                                                                 self.malformed)
        heads, lines = heads[keep], lines[keep]
        chunk = Chunk(categorical, numerical, multi,
                      {"click": heads[:, 1], "conversion": heads[:, 2]}, heads[:, 0], lines, path)
        keep = drop_bad_cells(token_checks(categorical, numerical, heads[:, 1:3], multi),
                              lines, path, self.malformed)
        return chunk if keep.all() else chunk.select(keep)


def _count(features: bytes) -> int:
    return features.count(b"\x01") + 1 if features else 0
