"""The public file formats that `synth.synthesize` writes (see docs/synthetic.md).

One writer per dataset turns chunks of synthetic exposures (`synth.exposures`)
into text, vectorised with `fastcsv`, through a `synth_writer.Writer` (every file
renamed into place only when the whole dataset is written).
"""
import os
from typing import Dict, List

import numpy as np

from pwiser_tf.pipelines.readers import aliexpress
from pwiser_tf.pipelines.readers.aliexpress import (ITEM_CATEGORICAL as AE_ITEM_CATEGORICAL,
                                                    ITEM_NUMERICAL as AE_ITEM_NUMERICAL,
                                                    USER_CATEGORICAL as AE_USER_CATEGORICAL,
                                                    USER_NUMERICAL as AE_USER_NUMERICAL)
from pwiser_tf.pipelines.fastcsv import (csv_rows, float_cells, int_cells, masked, text_rows,
                                         unit_cells)
from pwiser_tf.pipelines.synth_writer import Writer, bucket_ids, header_line, sparse_numbers

DECIMALS = 6            # the processed AliExpress CSV's precision
CCP_DECIMALS = 4        # Ali-CCP values


def writer(dataset: str, output_dir: str, country: str = "nl") -> "Writer":
    if dataset == "aliexpress":
        return AliExpressWriter(output_dir, country)
    return AliCcpWriter(output_dir)


# --- AliExpress -------------------------------------------------------------

AE_HEADER = list(aliexpress.HEADER) + ["intent"]
# vocabulary of the distractor ids, by column
AE_USER_SIZES = {3: 3, 4: 8, 5: 60, 6: 4, 8: 20, 32: 12, 33: 30}
AE_ITEM_SIZES = {36: 300, 40: 50, 41: 10, 42: 5}


class AliExpressWriter(Writer):
    """`raw/<cc>_{user,item}_<split>.csv` (no header) and `processed/<split>.csv`."""

    convert_format = "aliexpress-csv"

    def __init__(self, output_dir: str, country: str):
        super().__init__(output_dir)
        self.country = country.lower()

    def convert_inputs(self) -> List[str]:
        return [os.path.join(self.output_dir, "processed", f"{s}.csv") for s in ("train", "test")]

    @staticmethod
    def user_columns(world, users):
        """`{column: values}` of `user_2..user_33` for the given users."""
        draws = world.user_random[users]
        cols = {2: world.user_segment[users], 7: world.user_level[users]}
        for k, (column, size) in enumerate(AE_USER_SIZES.items()):
            cols[column] = bucket_ids(draws[:, k], size)
        cols[9] = world.user_propensity_score[users]
        for k, column in enumerate(AE_USER_NUMERICAL[1:]):
            cols[column] = sparse_numbers(draws[:, 8 + k])
        return cols

    @staticmethod
    def item_columns(world, items, position, match_score):
        """`{column: values}` of `item_2..item_48` for the given exposures."""
        draws = world.item_random[items]
        cols = {19: world.item_category[items], 34: world.item_style[items],
                35: world.item_brand[items]}
        for k, (column, size) in enumerate(AE_ITEM_SIZES.items()):
            cols[column] = bucket_ids(draws[:, k], size)
        cols.update({2: position, 3: world.item_quality_score[items],
                     4: world.item_price[items], 5: world.item_attraction[items],
                     6: match_score})
        for k, column in enumerate(AE_ITEM_NUMERICAL[5:]):
            cols[column] = sparse_numbers(draws[:, 8 + k])
        return cols

    def write(self, split: str, world, batch: dict) -> None:
        users = self.user_columns(world, batch["user"])
        items = self.item_columns(world, batch["item"], batch["position"], batch["match_score"])
        # each cell is formatted once, for the processed and the raw files alike
        categorical = int_cells(np.stack([users[c] for c in AE_USER_CATEGORICAL]
                                         + [items[c] for c in AE_ITEM_CATEGORICAL], axis=1))
        numerical = unit_cells(np.stack([users[c] for c in AE_USER_NUMERICAL]
                                         + [items[c] for c in AE_ITEM_NUMERICAL], axis=1),
                               DECIMALS)
        search_id = int_cells(batch["search_id"])
        labels = np.stack([batch["click"], batch["conversion"], batch["intent"]], axis=1)
        self.append(f"processed/{split}.csv",
                    csv_rows([search_id, categorical, numerical, int_cells(labels)]),
                    header=header_line(AE_HEADER))

        per_search = self.user_columns(world, batch["search_user"])
        self.append(f"raw/{self.country}_user_{split}.csv", csv_rows(
            [int_cells(batch["searches"])]
            + [int_cells(per_search[c]) if c in AE_USER_CATEGORICAL
               else unit_cells(per_search[c], DECIMALS) for c in range(2, 34)]))
        cells = {}
        offset = len(AE_USER_CATEGORICAL)
        for k, column in enumerate(AE_ITEM_CATEGORICAL):
            cells[column] = categorical[:, offset + k]
        offset = len(AE_USER_NUMERICAL)
        for k, column in enumerate(AE_ITEM_NUMERICAL):
            cells[column] = numerical[:, offset + k]
        label = batch["click"] + batch["conversion"]
        self.append(f"raw/{self.country}_item_{split}.csv", csv_rows(
            [search_id] + [cells[c] for c in range(2, 49)] + [int_cells(label)]))


# --- Ali-CCP -----------------------------------------------------------------

CCP_USER_FIELDS = ("101", "121", "122", "124", "125", "126", "127", "128", "129")
CCP_USER_MULTI = ("109_14", "110_14", "127_14", "150_14")
CCP_ITEM_FIELDS = ("205", "206", "207", "216", "508", "509", "702", "853", "301")
CCP_RECHUB_HEADER = ["click", "purchase", *CCP_USER_FIELDS, "205", "206", "207", "210", "216",
                     "508", "509", "702", "853", "301", *CCP_USER_MULTI,
                     *[f"D{f}" for f in CCP_USER_MULTI], "D508", "D509", "D702", "D853",
                     "intent"]
CCP_AITM_HEADER = ["click", "purchase", *CCP_USER_FIELDS, *CCP_ITEM_FIELDS, "intent"]
CCP_NODES = 5000                 # intention nodes (210) besides the category-style ones
CCP_MULTI_MAX = {"109_14": 8, "110_14": 6, "127_14": 6, "150_14": 10, "210": 3}
CCP_MAX_COUNT = 20               # behaviour counts of the *_14 fields


class AliCcpWriter(Writer):
    """Raw skeleton + common features, torch-rechub CSV, AITM CSV and ESMM text."""

    convert_format = "ali-ccp-csv"

    def __init__(self, output_dir: str):
        super().__init__(output_dir)
        self.sizes: Dict[str, int] = {}
        self.lines = {}

    def convert_inputs(self) -> List[str]:
        return [os.path.join(self.output_dir, "processed", "torch_rechub", f"ali_ccp_{s}.csv")
                for s in ("train", "val", "test")]

    def _vocab(self, world) -> Dict[str, int]:
        if not self.sizes:
            m = world.model
            self.sizes = {"101": world.n_users, "121": m.segments, "122": 10, "124": 3,
                          "125": 8, "126": 6, "127": 4, "128": 5, "129": 30,
                          "109_14": m.categories, "110_14": 2000, "127_14": m.brands,
                          "150_14": CCP_NODES, "205": world.n_items, "206": m.categories,
                          "207": 2000, "210": m.categories * 8 + CCP_NODES, "216": m.brands,
                          "508": m.segments * m.categories, "509": 6 * m.brands, "702": 1000,
                          "853": 8 * 3, "301": 3}
            offset, self.offsets = 1, {}
            for name, size in self.sizes.items():  # one global id space, as in the raw files
                self.offsets[name] = offset
                offset += size
        return self.sizes

    def features(self, world, batch) -> Dict[str, tuple]:
        """`{field: (ids [n, L] or [n], values, present)}`; user fields per search."""
        sizes = self._vocab(world)
        m = world.model
        su, sd = batch["search_user"], batch["search_draws"]
        ud = world.user_random[su]
        segment = world.user_segment[su]
        out = {"101": su, "121": segment, "126": world.user_level[su]}
        for k, name in enumerate(("122", "124", "125", "127", "128", "129")):
            out[name] = bucket_ids(ud[:, k], sizes[name])
        # behaviour history: categories browsed lean to the segment's favourites
        favourites = np.argsort(-world.affinity, axis=1)[:, :8]
        column = 0
        for name in CCP_USER_MULTI:  # draws: a length, then `width` ids, then `width` counts
            width = CCP_MULTI_MAX[name]
            length = bucket_ids(sd[:, column], width + 1)
            draws = sd[:, column + 1:column + 1 + width]
            counts = 1 + bucket_ids(sd[:, column + 1 + width:column + 1 + 2 * width], CCP_MAX_COUNT)
            column += 1 + 2 * width
            if name == "109_14":
                length = np.maximum(length, 1)
                ids = favourites[segment[:, None], bucket_ids(draws ** 2, 8)]
            else:
                ids = bucket_ids(draws, sizes[name])
            present = np.arange(width)[None, :] < length[:, None]
            out[name] = (ids, np.log1p(counts), present)
        item, d = batch["item"], batch["draws"]
        idraw = world.item_random[item]
        category, style = world.item_category[item], world.item_style[item]
        nodes = np.stack([category * 8 + style,
                          m.categories * 8 + bucket_ids(d[:, 0], CCP_NODES),
                          m.categories * 8 + bucket_ids(d[:, 1], CCP_NODES)], axis=1)
        n_nodes = 1 + bucket_ids(idraw[:, 10], 3)
        level = world.user_level[batch["user"]]
        out.update({
            "205": item, "206": category, "207": bucket_ids(idraw[:, 0], sizes["207"]),
            "210": (nodes, np.ones(nodes.shape), np.arange(3)[None, :] < n_nodes[:, None]),
            "216": world.item_brand[item],
            "508": (world.user_segment[batch["user"]] * m.categories + category,
                    batch["match_score"], np.ones(len(item), bool)),
            "509": (level * m.brands + world.item_brand[item], d[:, 2], d[:, 3] < 0.6),
            "702": (bucket_ids(d[:, 4], sizes["702"]), d[:, 5], d[:, 6] < 0.3),
            "853": (style * 3 + bucket_ids(batch["position"], 3),
                    world.item_attraction[item], np.ones(len(item), bool)),
            "301": bucket_ids(batch["position"], 3),
        })
        return out

    def write(self, split: str, world, batch: dict) -> None:
        feats = self.features(world, batch)
        search = batch["search_id"] - batch["search_id"][0]
        index = self._common_index(batch)
        self._raw(split, feats, batch, search, index)
        self._rechub(split, feats, batch, search)
        self._aitm(split, feats, batch, search)
        self._esmm(split, feats, batch, search)

    # raw files ---------------------------------------------------------------
    @staticmethod
    def _common_index(batch) -> np.ndarray:
        """16 hex digits per search, increasing with the search id (files stay sorted)."""
        value = (batch["searches"].astype(np.uint64) << np.uint64(24)) | (
            (batch["search_draws"][:, -1] * (1 << 24)).astype(np.uint64))
        digits = np.frombuffer(b"0123456789abcdef", np.uint8)
        shifts = np.arange(60, -4, -4, dtype=np.uint64)
        return digits[((value[:, None] >> shifts[None, :]) & np.uint64(15)).astype(np.int64)]

    def _entries(self, field: str, ids, values, present, lead: bool = True) -> np.ndarray:
        """`[\\x01]field\\x02global_id\\x03value` cells, masked where absent."""
        ids = np.asarray(ids)
        shape = ids.shape
        parts = [np.broadcast_to(np.frombuffer(field.encode() + b"\x02", np.uint8),
                                 shape + (len(field) + 1,)),
                 int_cells(ids + self.offsets[field]),
                 np.broadcast_to(np.uint8(3), shape + (1,)),
                 float_cells(values, 5)]
        if lead:
            parts.insert(0, np.broadcast_to(np.uint8(1), shape + (1,)))
        return masked(np.concatenate(parts, axis=-1), present)

    def _raw_lists(self, feats, fields):
        cells, count = [], 0
        for i, name in enumerate(fields):
            value = feats[name]
            if isinstance(value, tuple):
                ids, values, present = value
            else:
                ids, values, present = value, np.ones(len(value)), np.ones(len(value), bool)
            cells.append(self._entries(name, ids, values, present, lead=i > 0))
            count = count + (present.sum(axis=1) if present.ndim == 2 else present.astype(int))
        return cells, count

    def _raw(self, split, feats, batch, search, index):
        user_cells, user_count = self._raw_lists(feats, CCP_USER_FIELDS + CCP_USER_MULTI)
        self.append(f"raw/common_features_{split}.csv", text_rows(
            [index, b",", int_cells(user_count), b","] + user_cells))
        item_cells, item_count = self._raw_lists(
            feats, ("205", "206", "207", "210", "216", "508", "509", "702", "853", "301"))
        first = self.lines.get(("raw", split), 0)
        self.lines[("raw", split)] = first + len(search)
        self.append(f"raw/sample_skeleton_{split}.csv", text_rows(
            [int_cells(first + 1 + np.arange(len(search))), b",", int_cells(batch["click"]), b",",
             int_cells(batch["conversion"]), b",", index[search], b",", int_cells(item_count),
             b","] + item_cells))

    # processed files -----------------------------------------------------------
    @staticmethod
    def _encoded(feats, name, search):
        """torch-rechub / AITM id: local id + 1, the last id of a list, 0 when absent."""
        value = feats[name]
        if not isinstance(value, tuple):
            ids = value + 1
            return ids[search] if name in CCP_USER_FIELDS else ids
        ids, values, present = value
        if ids.ndim == 1:
            return np.where(present, ids + 1, 0)
        last = np.maximum(present.sum(axis=1) - 1, 0)
        rows = np.arange(len(ids))
        encoded = np.where(present.any(axis=1), ids[rows, last] + 1, 0)
        return encoded[search] if name in CCP_USER_MULTI else encoded

    @staticmethod
    def _dense(feats, name, search):
        """The scaled value of the kept (last) id, 0 when absent."""
        ids, values, present = feats[name]
        if ids.ndim == 1:
            return np.where(present, values, 0.0)
        last = np.maximum(present.sum(axis=1) - 1, 0)
        value = np.where(present.any(axis=1), values[np.arange(len(ids)), last], 0.0)
        return (value / np.log1p(CCP_MAX_COUNT))[search]

    def _rechub(self, split, feats, batch, search):
        sparse = [name for name in CCP_RECHUB_HEADER[2:25]]
        ids = np.stack([self._encoded(feats, name, search) for name in sparse], axis=1)
        dense = np.stack([self._dense(feats, name, search)
                          for name in (*CCP_USER_MULTI, "508", "509", "702", "853")], axis=1)
        text_columns = [int_cells(batch["click"]), int_cells(batch["conversion"]),
                        int_cells(ids), float_cells(dense, CCP_DECIMALS),
                        int_cells(batch["intent"])]
        for name, rows in self._parts(split, batch):
            self.append(f"processed/torch_rechub/ali_ccp_{name}.csv",
                        csv_rows([c[rows] for c in text_columns]),
                        header=header_line(CCP_RECHUB_HEADER))

    def _parts(self, split, batch):
        """train -> train; test -> val (odd search ids) and test (even), i.e. 2:1:1."""
        if split == "train":
            return [("train", slice(None))]
        odd = batch["search_id"] % 2 == 1
        return [("val", odd), ("test", ~odd)]

    def _aitm(self, split, feats, batch, search):
        ids = np.stack([self._encoded(feats, name, search)
                        for name in CCP_AITM_HEADER[2:-1]], axis=1)
        columns = [int_cells(batch["click"]), int_cells(batch["conversion"]), int_cells(ids)]
        if split == "train":  # the public test file has no header line, hence no intent
            self.append("processed/aitm/train.csv",
                        csv_rows(columns + [int_cells(batch["intent"])]),
                        header=header_line(CCP_AITM_HEADER))
        else:
            self.append("processed/aitm/test.csv", csv_rows(columns))

    def _esmm(self, split, feats, batch, search):
        order = ("210", "216", "301", "205", "206", "207", "508", "509", "702", "853",
                 "121", "122", "101", "124", "125", "126", "127", "128", "129", *CCP_USER_MULTI)
        cells = []
        for name in order:
            value = feats[name]
            ids, present = (value[0], value[2]) if isinstance(value, tuple) else (
                value, np.ones(len(value), bool))
            if name in CCP_USER_FIELDS or name in CCP_USER_MULTI:
                ids, present = ids[search], present[search]
            token = np.concatenate([
                np.broadcast_to(np.frombuffer(f",{name}:".encode(), np.uint8),
                                ids.shape + (len(name) + 2,)),
                int_cells(ids + self.offsets[name])], axis=-1)
            cells.append(masked(token, present))
        first = self.lines.get(("esmm", split), 0)
        self.lines[("esmm", split)] = first + len(search)
        self.append(f"processed/esmm/{split}.txt", text_rows(
            [int_cells(first + 1 + np.arange(len(search))), b",", int_cells(batch["click"]),
             b",", int_cells(batch["conversion"])] + cells))


__all__ = ["writer", "Writer", "AliExpressWriter", "AliCcpWriter"]
