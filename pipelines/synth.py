"""Synthetic AliExpress and Ali-CCP data from a documented latent model of intent.

`synthesize(dataset, rows, output_dir, seed=0)` writes the public raw and
processed formats (`docs/synthetic.md` lists the files), so every reader, the
converter and the whole experiment run on it end to end.

The latent model (one exposure = one item shown to a user in a result list):

- Users belong to one of `segments` taste segments and have a purchase
  propensity `rho ~ N(0, 1)`. Items have a category, a quality `q` (a brand
  effect plus an item effect), a price in [0, 1], and a share `bait_share` of
  them are *clickbait* (flashy title style, attractive thumbnail, lower quality).
- Relevance `r = A[segment, category] + quality_weight * q + propensity_weight * rho`,
  with the taste matrix `A ~ N(0, affinity_scale^2)`.
- Purchase intent: `intent ~ Bernoulli(sigmoid(intent_bias + r - intent_position_weight * pos))`,
  `pos = rank / (max_items_per_search - 1)` the place in the result list. An exposure with intent is
  always clicked (an intentional click).
- Noise clicks (accidents, curiosity, clickbait), independent of intent:
  `noise ~ Bernoulli(sigmoid(noise_bias + bait_weight * bait + attraction_weight * a
  - noise_position_weight * pos))`, `a` the thumbnail attractiveness.
- `click = intent OR noise`; `conversion = intent AND Bernoulli(sigmoid(
  conversion_bias + conversion_relevance_weight * r - price_weight * (price - 0.5)))`.
  A conversion therefore always follows an intentional click; noise clicks never
  convert.
- The clean label `intent` says whether the exposure had purchase intent.

With the defaults, about 1.4% of exposures carry intent and about 2% get a noise
click (CTR about 3.6%, about 60% of the clicks are noise), and about 0.45% convert,
a third of the intentional clicks; `RATE_RANGES` holds the ranges the tests
enforce. The features reveal the latents with noise: the segment and category ids (their cross is the taste
matrix) and a noisy user-category match score (as an upstream ranker would
give), a brand id and a noisy quality score, a user level and a noisy
propensity score, the title style and attractiveness (clickbait), the price and
the position; the other fields are distractors. A model trained on clicks alone
learns to rank clickbait high; conversions teach it that those clicks carry no
intent.

Example:

>>> import tempfile
>>> written = synthesize("aliexpress", 2000, tempfile.mkdtemp(), seed=0)
>>> written["convert_format"], [os.path.basename(p) for p in written["convert_inputs"]]
('aliexpress-csv', ['train.csv', 'test.csv'])
>>> written["counts"]["train"]["rows"] + written["counts"]["test"]["rows"]
2000
"""
import dataclasses
import os
import sys
from typing import Dict, Optional

import numpy as np

from pwiser_tf import fileio
from pwiser_tf.errors import InputError

DATASETS = ("aliexpress", "ali-ccp")
COUNTRIES = ("nl", "es", "fr", "us", "ru")
TEST_FRACTION = {"aliexpress": 0.3, "ali-ccp": 0.5}
MANIFEST_FILE = "synth.json"
CHUNK_ROWS = 200_000  # exposures generated and written at a time (bounds memory)
USER_LEVELS = 6                  # buckets of the noisy propensity score
PLAIN_STYLES, FLASHY_STYLES = 6, 2  # title styles; clickbait items mostly use the flashy ones

# Documented ranges of the default model's rates (shares of exposures), held by tests.
RATE_RANGES = {"ctr": (0.02, 0.06), "conversion": (0.002, 0.008),
               "intent": (0.008, 0.025), "noise_click_share": (0.35, 0.70)}


@dataclasses.dataclass(frozen=True)
class LatentModel:
    """Parameters of the latent model (see the module docstring).

    Example:

    >>> LatentModel(bait_share=0.0).bait_share
    0.0
    """

    segments: int = 24                  # user taste segments
    categories: int = 32                # item categories
    brands: int = 120
    affinity_scale: float = 1.5         # std of the segment x category taste matrix
    quality_weight: float = 1.0
    propensity_weight: float = 0.5
    intent_bias: float = -5.6
    intent_position_weight: float = 0.3
    bait_share: float = 0.15            # share of items that are clickbait
    bait_quality_shift: float = -0.5    # clickbait items are worse on average
    noise_bias: float = -5.2
    bait_weight: float = 2.5
    attraction_weight: float = 1.5
    noise_position_weight: float = 1.5
    conversion_bias: float = -2.6
    conversion_relevance_weight: float = 0.5
    price_weight: float = 1.0
    match_noise: float = 0.3            # noise of the user-category match score
    min_items_per_search: int = 5
    max_items_per_search: int = 40
    users_per_row: float = 1 / 40       # user pool size relative to rows
    items_per_row: float = 1 / 20       # item pool size relative to rows


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class World:
    """The users, items and taste matrix that every exposure is drawn from."""

    def __init__(self, model: LatentModel, rows: int, seed: int):
        rng = np.random.default_rng([seed, 0])
        self.model = model
        self.affinity = rng.normal(0.0, model.affinity_scale, [model.segments, model.categories])
        n_users = max(50, int(rows * model.users_per_row))
        self.user_segment = rng.integers(0, model.segments, n_users)
        self.user_propensity = rng.normal(0.0, 1.0, n_users)
        self.user_random = rng.random([n_users, 32])       # distractor draws, per user
        n_items = max(200, int(rows * model.items_per_row))
        self.item_category = rng.integers(0, model.categories, n_items)
        self.item_brand = rng.integers(0, model.brands, n_items)
        brand_quality = rng.normal(0.0, 0.8, model.brands)
        self.item_bait = rng.random(n_items) < model.bait_share
        self.item_quality = (brand_quality[self.item_brand] + rng.normal(0.0, 0.6, n_items)
                             + model.bait_quality_shift * self.item_bait)
        self.item_price = rng.beta(2.0, 5.0, n_items)
        self.item_attraction = np.where(self.item_bait, rng.beta(5.0, 2.0, n_items),
                                        rng.beta(2.0, 4.0, n_items))
        self.item_random = rng.random([n_items, 48])       # distractor draws, per item
        self.n_users, self.n_items = n_users, n_items
        # What the features reveal of the latents: noisy scores and buckets.
        self.user_propensity_score = _sigmoid(self.user_propensity
                                              + rng.normal(0.0, 0.5, n_users))
        self.user_level = np.minimum((self.user_propensity_score * USER_LEVELS).astype(int),
                                     USER_LEVELS - 1)
        self.item_quality_score = _sigmoid(self.item_quality + rng.normal(0.0, 0.7, n_items))
        flashy = np.where(self.item_bait, rng.random(n_items) < 0.9,
                          rng.random(n_items) < 0.05)
        self.item_style = np.where(flashy, PLAIN_STYLES + rng.integers(0, FLASHY_STYLES, n_items),
                                   rng.integers(0, PLAIN_STYLES, n_items))


def exposures(world: World, rows: int, seed: int, chunk: int, first_search: int) -> dict:
    """`rows` exposures in whole searches (the last one cut), with labels and latents."""
    model = world.model
    rng = np.random.default_rng([seed, 1, chunk])
    lengths = rng.integers(model.min_items_per_search, model.max_items_per_search + 1,
                           rows // model.min_items_per_search + 1)
    searches = int(np.searchsorted(np.cumsum(lengths), rows)) + 1
    lengths = lengths[:searches]
    lengths[-1] -= int(lengths.sum()) - rows
    search_user = rng.integers(0, world.n_users, searches)
    search = np.repeat(np.arange(searches), lengths)
    start = np.repeat(np.cumsum(lengths) - lengths, lengths)
    rank = np.arange(rows) - start
    position = rank / (model.max_items_per_search - 1)
    user = search_user[search]
    item = rng.integers(0, world.n_items, rows)
    affinity = world.affinity[world.user_segment[user], world.item_category[item]]
    relevance = (affinity + model.quality_weight * world.item_quality[item]
                 + model.propensity_weight * world.user_propensity[user])
    intent = rng.random(rows) < _sigmoid(model.intent_bias + relevance
                                         - model.intent_position_weight * position)
    noise = rng.random(rows) < _sigmoid(model.noise_bias
                                        + model.bait_weight * world.item_bait[item]
                                        + model.attraction_weight * world.item_attraction[item]
                                        - model.noise_position_weight * position)
    buys = rng.random(rows) < _sigmoid(model.conversion_bias
                                       + model.conversion_relevance_weight * relevance
                                       - model.price_weight * (world.item_price[item] - 0.5))
    return {
        "search_id": first_search + search, "searches": first_search + np.arange(searches),
        "search_user": search_user,
        "search_lengths": lengths, "user": user, "item": item, "rank": rank,
        "position": position, "draws": rng.random([rows, 8]),
        "match_score": _sigmoid(affinity + rng.normal(0.0, model.match_noise, rows)),
        "search_draws": rng.random([searches, 72]),
        "click": (intent | noise).astype(np.int64),
        "conversion": (intent & buys).astype(np.int64),
        "intent": intent.astype(np.int64), "noise_click": (noise & ~intent).astype(np.int64),
    }


def synthesize(dataset: str, rows: int, output_dir: str, *, seed: int = 0,
               test_fraction: Optional[float] = None, country: str = "nl",
               model: Optional[LatentModel] = None, progress: bool = False) -> Dict:
    """Writes `rows` synthetic exposures of `dataset` in its raw and processed formats.

    Args:
      dataset: `aliexpress` or `ali-ccp`.
      rows: exposures in all splits together.
      output_dir: receives `raw/`, `processed/` and `synth.json` (docs/synthetic.md).
      seed: the data are a function of (dataset, rows, seed, test_fraction, model).
      test_fraction: share of the exposures (whole searches, the last ones) in
        test; by default `TEST_FRACTION[dataset]` (AliExpress 0.3, close to the
        public split; Ali-CCP 0.5, as its raw train and test halves, which the
        torch-rechub files cut into train:val:test = 2:1:1).
      country: AliExpress file prefix (`nl`, `es`, `fr`, `us`, `ru`).
      model: the latent model; `LatentModel()` by default.
      progress: print one line per written chunk.

    Returns:
      the manifest (also in `synth.json`): `files`, `counts`, `convert_format` and
      `convert_inputs` (what `pwiser-tf convert` takes for the processed CSV).
    """
    from pwiser_tf.pipelines import synth_formats

    if dataset not in DATASETS:
        raise InputError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    if not isinstance(rows, (int, np.integer)) or rows < 2:
        raise InputError(f"rows must be an integer >= 2, got {rows!r}")
    if country.lower() not in COUNTRIES:
        raise InputError(f"country must be one of {', '.join(COUNTRIES)}, got {country!r}")
    test_fraction = TEST_FRACTION[dataset] if test_fraction is None else test_fraction
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    model = model or LatentModel()
    world = World(model, int(rows), seed)
    writer = synth_formats.writer(dataset, output_dir, country=country)
    counts = {name: {k: 0 for k in ("rows", "clicks", "conversions", "intent", "noise_clicks")}
              for name in ("train", "test")}
    test_rows = max(1, int(round(rows * test_fraction)))
    plan = [("train", rows - test_rows), ("test", test_rows)]
    chunk, first_search = 0, 1
    with writer:
        for split, split_rows in plan:
            done = 0
            while done < split_rows:
                size = min(CHUNK_ROWS, split_rows - done)
                batch = exposures(world, size, seed, chunk, first_search)
                writer.write(split, world, batch)
                first_search += len(batch["search_lengths"])
                done += size
                chunk += 1
                _count(counts[split], batch)
                if progress:
                    print(f"synth {dataset}: {split} {done:,}/{split_rows:,} rows",
                          file=sys.stderr, flush=True)
        manifest = {"dataset": dataset, "rows": int(rows), "seed": seed,
                    "test_fraction": test_fraction, "model": dataclasses.asdict(model),
                    "counts": counts, "files": writer.files(),
                    "convert_format": writer.convert_format,
                    "convert_inputs": writer.convert_inputs()}
    # written last: it marks a complete dataset
    fileio.write_json(os.path.join(output_dir, MANIFEST_FILE), manifest)
    return manifest


def _count(counts: dict, batch: dict) -> None:
    counts["rows"] += int(len(batch["click"]))
    counts["clicks"] += int(batch["click"].sum())
    counts["conversions"] += int(batch["conversion"].sum())
    counts["intent"] += int(batch["intent"].sum())
    counts["noise_clicks"] += int(batch["noise_click"].sum())


__all__ = ["synthesize", "LatentModel", "World", "exposures", "DATASETS", "RATE_RANGES",
           "MANIFEST_FILE"]
