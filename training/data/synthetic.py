"""A synthetic click world with planted ground truth (DESIGN §3 "synthetic", §7 simulator).

Real data sets cannot tell us whether a model recovered *the* user–tag preferences, only
whether it predicted held-out clicks. Here the preferences are planted, so tests, the demo
and the A/B simulator can compare what a model learned with what is true.

The world
---------
* **Topics and tags.** ``tags`` tags are split into ``topics`` contiguous blocks of (almost)
  equal size. Tag names are ``"<topic>-<j>"`` (e.g. ``"vintage-3"``: tag 3 of topic
  ``vintage``; topics past the built-in word list are named ``topic<k>``). Within a topic,
  tag ``j`` has prior weight ∝ (j + 1)^-0.7, so tag popularity is skewed.
* **Users.** Topic preference ~ sparse Dirichlet(``topic_alpha`` · boost), where the boost is
  larger for the two topics favoured by the user's (latent) ``region`` and ``age`` bucket;
  within each topic, tag preference ~ sparse Dirichlet(``tag_alpha`` · tag prior). The
  affinity to tag t is ``topic_pref[topic(t)] · tag_pref[t]``; each row sums to 1. A share
  ``unknown_attribute_share`` of users has their observed attributes set to -1 (unknown);
  the latent value still shaped their preferences.
* **Items.** A main topic; 2–6 tags (sampled without replacement, ~90% of the tag mass from
  the main topic); 1–2 of them are *decisive* (never all of them). Privileged fields:
  ``category`` (vocabulary = topic names; the main topic with probability
  1 - ``category_noise``, otherwise a random topic) and ``brand``: each tag has
  ``brands_per_tag`` brands anchored on it (Zipf-weighted slots) and an item usually takes a
  brand anchored on its first decisive tag; 10% take a random anchored brand, and a share
  ``boutique_brand_share`` gets a brand of its own (a singleton, so the protocol's
  "values seen once → others" rule matters). Unused brands are not in the vocabulary.
  Item popularity is Zipf(``popularity_exponent``) over a random item order.
* **Impressions.** User u gets between ⌈m/2⌉ and m + ⌊m/2⌋ impressions
  (m = ``impressions_per_user``, mean ≈ m). Each impression is, with probability
  ``personal_share``, an item of a topic drawn from the user's topic preference (by popularity
  within that topic) and otherwise an item drawn from global popularity. Re-impressions of an
  item are possible. Rows are ordered by user, then time; times are int64 unix seconds,
  strictly increasing per user, starting in the first 180 days after 2020-01-01 UTC with
  gaps of 1 s + Exponential(4 h).
* **Clicks.** ``P(click) = sigmoid(base_logit + decisive_weight · s_dec + category_weight ·
  s_cat)`` with ``s_dec`` = mean affinity of the user to the item's *decisive* tags divided by
  the user's largest tag affinity, and ``s_cat`` = the user's topic preference for the item's
  category divided by their largest topic preference (both in [0, 1]). Non-decisive tags
  have no effect. The defaults give an overall CTR of about 17%. Unclicked impressions are
  explicit negatives (label 0), so ``explicit_negatives=True``.
* **Ids.** Users are ``"u<index>"``, items ``"i<index>"``; all ids are dense indices.
* **Coalitions.** ``inter_tags`` = ``item_tags`` of the impressed item. ``tag_counts[t]`` =
  number of interactions (impressions, clicked or not) whose coalition contains t.

``truth`` keys
--------------
``user_tag_affinity``      float32 [U, T] true tag interests; rows sum to 1 (dense worlds).
``user_tag_offsets``,      the same for sparse worlds (see "Scale" below), as CSR: int64
``user_tag_ids``,          [U + 1] offsets, int32 tag ids sorted within a user, float32
``user_tag_values``        affinities; each user's values sum to 1.
``user_topic_affinity``    float32 [U, K] true topic preferences; rows sum to 1.
``tag_topic``              int32 [T] topic of each tag (tags are contiguous blocks).
``item_topic``             int32 [I] main topic of each item.
``item_category``          int32 [I] the item's ``category`` value (= a topic id).
``item_popularity``        float64 [I] impression probability under global popularity.
``item_decisive_offsets``  int64 [I + 1] CSR offsets of the decisive tags per item.
``item_decisive_tags``     int32 CSR values: decisive tag ids, sorted within an item.
``inter_click_prob``       float32 [N] the true click probability of each interaction.
``click_params``           float64 [3] (base_logit, decisive_weight, category_weight).

Scale
-----
A dense [U, T] affinity cannot exist at a million users and tens of thousands of tags (80 GB
at 1 M x 20 k), nor can the [I, T] item-tag sampling keys. Item tags are therefore sampled in
blocks of items (the same random stream, so the same world), and a world with more than
``SPARSE_ABOVE_CELLS`` user-tag cells (or ``sparse=True``) keeps a *sparse* truth:

* per topic, the ``HEAD_TAGS`` tags of highest prior get an exact Dirichlet draw and the rest
  of the topic one aggregated component (the Dirichlet aggregation property makes the head
  exact);
* a user's affinity is then their ``TRUTH_TAGS_PER_USER`` strongest head tags, renormalised
  to sum to 1: those are the user's planted interests, and every other tag has affinity 0
  (for clicks too);
* users' preferences and their impressions are drawn in blocks of users, so memory stays
  bounded (the generator peaked at 2.1 GB for 500k users and 20 M impressions).

Worlds at or below the threshold (every default size) are generated exactly as before.

:func:`click_probability` recomputes the planted click probability for any (user, item)
pairs from ``truth``: what the A/B simulator uses to click realistically.
"""

from __future__ import annotations

import numpy as np

from training.data.ragged import Ragged
from training.data.raw import RawDataset, Vocabulary

TOPIC_WORDS = (
    "vintage",
    "outdoor",
    "tech",
    "cooking",
    "fitness",
    "travel",
    "music",
    "gaming",
    "fashion",
    "books",
    "garden",
    "pets",
    "art",
    "cinema",
    "kids",
    "cars",
    "finance",
    "beauty",
    "home",
    "science",
    "crafts",
    "sports",
    "photo",
    "wellness",
)
AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-54", "55+")
REGIONS = ("north", "south", "east", "west", "central")
EPOCH_2020 = 1_577_836_800  # 2020-01-01T00:00:00Z
_MIN_ITEM_TAGS, _MAX_ITEM_TAGS = 2, 6
_ITEM_TAG_COUNT_P = np.array([0.15, 0.30, 0.30, 0.15, 0.10])  # P(2..6 tags)
_OFF_TOPIC_SHARE = 0.1  # share of an item's tag-sampling mass outside its main topic
_RANDOM_BRAND_SHARE = 0.1
SPARSE_ABOVE_CELLS = 1 << 26  # users x tags above which the truth is sparse (dense: 256 MB)
HEAD_TAGS = 64  # per topic: tags whose within-topic preference is drawn one by one (sparse)
TRUTH_TAGS_PER_USER = 64  # tags with a planted affinity per user (sparse)
_USER_BLOCK = 20_000  # users per block of the sparse affinity draw
_CELL_BLOCK = 1 << 24  # item x tag cells per block of the item-tag sampling keys
_PAIR_CHUNK = 1 << 22  # (user, item) pairs per chunk of click_probability
_IMPRESSION_USER_BLOCK = 100_000  # users per block of impressions (sparse worlds)


def topic_names(topics: int) -> list[str]:
    """Readable, deterministic topic names: words first, then ``topic<k>``."""
    return [TOPIC_WORDS[k] if k < len(TOPIC_WORDS) else f"topic{k}" for k in range(topics)]


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _grouped_draw(
    rng: np.random.Generator,
    group: np.ndarray,
    starts: np.ndarray,
    cum: np.ndarray,
) -> np.ndarray:
    """Draw one element per entry of ``group``, weighted, among that group's elements.

    Elements are laid out so that group g occupies ``[starts[g], starts[g + 1])`` and ``cum``
    is the running sum of their weights (float64). Returns global element indices; callers
    must only pass groups with positive total weight.
    """
    before = np.concatenate(([0.0], cum))
    lo, hi = before[starts[group]], before[starts[group + 1]]
    target = lo + rng.random(len(group)) * (hi - lo)
    idx = np.searchsorted(cum, target, side="right")
    return np.clip(idx, starts[group], starts[group + 1] - 1)


def _sparse_affinity(
    rng: np.random.Generator,
    topic_pref: np.ndarray,
    tag_conc: np.ndarray,
    topic_start: np.ndarray,
) -> dict[str, np.ndarray]:
    """Each user's ``TRUTH_TAGS_PER_USER`` strongest tags as CSR truth (module docstring,
    "Scale"): exact Dirichlet draws for the head of each topic, the tail aggregated."""
    n_u, n_k = topic_pref.shape
    head = np.minimum(np.diff(topic_start), HEAD_TAGS)
    head_start = np.concatenate(([0], np.cumsum(head)))
    head_tags = np.concatenate([topic_start[k] + np.arange(head[k]) for k in range(n_k)])
    head_topic = np.repeat(np.arange(n_k), head)
    tail_conc = np.add.reduceat(tag_conc, topic_start[:-1]) - np.add.reduceat(
        tag_conc[head_tags], head_start[:-1]
    )
    shape = np.concatenate((tag_conc[head_tags], np.maximum(tail_conc, 0.0))).astype(np.float32)
    keep = min(TRUTH_TAGS_PER_USER, len(head_tags))
    ids = np.empty((n_u, keep), dtype=np.int32)
    values = np.empty((n_u, keep), dtype=np.float32)
    for lo in range(0, n_u, _USER_BLOCK):
        hi = min(lo + _USER_BLOCK, n_u)
        draw = rng.standard_gamma(np.broadcast_to(shape, (hi - lo, len(shape))), dtype=np.float32)
        draw += np.float32(1e-12)
        per_topic = np.add.reduceat(draw[:, : len(head_tags)], head_start[:-1], axis=1)
        per_topic += draw[:, len(head_tags) :]  # the aggregated tail of each topic
        affinity = topic_pref[lo:hi, head_topic] * (
            draw[:, : len(head_tags)] / per_topic[:, head_topic]
        )
        top = np.argpartition(-affinity, keep - 1, axis=1)[:, :keep]
        top.sort(axis=1)  # head_tags ascend, so tag ids ascend within a user
        chosen = np.take_along_axis(affinity, top, axis=1)
        values[lo:hi] = chosen / chosen.sum(axis=1, keepdims=True)
        ids[lo:hi] = head_tags[top]
    return {
        "user_tag_offsets": np.arange(n_u + 1, dtype=np.int64) * keep,
        "user_tag_ids": ids.ravel(),
        "user_tag_values": values.ravel(),
    }


def _impressions(
    rng: np.random.Generator,
    lo: int,
    hi: int,
    m: int,
    personal_share: float,
    popularity: np.ndarray,
    item_topic: np.ndarray,
    truth: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Impressions, times and clicks of users ``lo:hi`` (module docstring, "Impressions"):
    user (int32), item (int32), time (int64), label (int8), click probability (float32).
    Large worlds call it per block of users so the temporaries stay bounded."""
    n_u, n_k = hi - lo, truth["user_topic_affinity"].shape[1]
    n_i = len(popularity)
    per_user = rng.integers((m + 1) // 2, m + m // 2 + 1, n_u)
    user_offsets = np.concatenate(([0], np.cumsum(per_user)))
    n = int(user_offsets[-1])
    local_user = np.repeat(np.arange(n_u, dtype=np.int32), per_user)

    inter_item = rng.choice(n_i, n, p=popularity)
    personal = np.flatnonzero(rng.random(n) < personal_share)
    if len(personal):
        pu = local_user[personal]
        topic_cum = np.cumsum(truth["user_topic_affinity"][lo:hi].ravel(), dtype=np.float64)
        row_starts = np.arange(n_u + 1, dtype=np.int64) * n_k
        chosen = _grouped_draw(rng, pu, row_starts, topic_cum)
        chosen_topic = chosen - pu.astype(np.int64) * n_k
        by_topic = np.argsort(item_topic, kind="stable")
        item_starts = np.concatenate(([0], np.cumsum(np.bincount(item_topic, minlength=n_k))))
        has_items = item_starts[chosen_topic + 1] > item_starts[chosen_topic]
        picked = _grouped_draw(
            rng, chosen_topic[has_items], item_starts, np.cumsum(popularity[by_topic])
        )
        inter_item[personal[has_items]] = by_topic[picked]
    inter_item = inter_item.astype(np.int32)

    gaps = 1 + rng.exponential(4 * 3600.0, n).astype(np.int64)
    start = EPOCH_2020 + rng.integers(0, 180 * 86400, n_u)
    running = np.cumsum(gaps)
    before_user = np.concatenate(([0], running))[user_offsets[:-1]]
    inter_time = (running - np.repeat(before_user - start, per_user)).astype(np.int64)

    inter_user = local_user + np.int32(lo)
    click_prob = click_probability(truth, inter_user, inter_item)
    inter_label = (rng.random(n) < click_prob).astype(np.int8)
    return inter_user, inter_item, inter_time, inter_label, click_prob.astype(np.float32)


def generate_synthetic(
    *,
    users: int = 2000,
    items: int = 1000,
    tags: int = 200,
    topics: int = 12,
    impressions_per_user: int = 40,
    seed: int = 0,
    personal_share: float = 0.5,
    topic_alpha: float = 0.2,
    tag_alpha: float = 0.3,
    attribute_boost: float = 2.0,
    unknown_attribute_share: float = 0.03,
    category_noise: float = 0.15,
    brands_per_tag: int = 3,
    boutique_brand_share: float = 0.03,
    popularity_exponent: float = 1.0,
    base_logit: float = -2.7,
    decisive_weight: float = 5.0,
    category_weight: float = 1.0,
    sparse: bool | None = None,
) -> RawDataset:
    """Generate the synthetic world described in the module docstring.

    Deterministic for a given seed and arguments; vectorised so 100k users take seconds.
    ``sparse`` picks the sparse truth of large worlds (None: when users x tags exceeds
    ``SPARSE_ABOVE_CELLS``). Raises ValueError naming the offending argument.
    """
    _check_int("users", users, 1)
    _check_int("items", items, 1)
    _check_int("topics", topics, 1)
    _check_int("tags", tags, 1)
    if tags < topics:
        raise ValueError(f"tags ({tags}) must be >= topics ({topics}): every topic needs a tag")
    _check_int("impressions_per_user", impressions_per_user, 1)
    _check_int("seed", seed, 0)
    _check_int("brands_per_tag", brands_per_tag, 1)
    for name, value in (
        ("personal_share", personal_share),
        ("unknown_attribute_share", unknown_attribute_share),
        ("category_noise", category_noise),
        ("boutique_brand_share", boutique_brand_share),
    ):
        _check_fraction(name, value)
    for name, value in (("topic_alpha", topic_alpha), ("tag_alpha", tag_alpha)):
        if not float(value) > 0.0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
    for name, value in (
        ("attribute_boost", attribute_boost),
        ("popularity_exponent", popularity_exponent),
    ):
        if not float(value) >= 0.0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    for name, value in (
        ("base_logit", base_logit),
        ("decisive_weight", decisive_weight),
        ("category_weight", category_weight),
    ):
        if not np.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")

    rng = np.random.default_rng(seed)
    n_u, n_i, n_t, n_k = users, items, tags, topics
    if sparse is None:
        sparse = n_u * n_t > SPARSE_ABOVE_CELLS

    # --- topics and tags -------------------------------------------------------------
    names = topic_names(n_k)
    topic_size = np.full(n_k, n_t // n_k, dtype=np.int64)
    topic_size[: n_t % n_k] += 1
    topic_start = np.concatenate(([0], np.cumsum(topic_size)))
    tag_topic = np.repeat(np.arange(n_k, dtype=np.int32), topic_size)
    tag_rank = np.arange(n_t) - topic_start[tag_topic]
    tag_names = [
        f"{names[k]}-{j}" for k, j in zip(tag_topic.tolist(), tag_rank.tolist(), strict=True)
    ]
    tag_prior = (tag_rank + 1.0) ** -0.7
    tag_prior /= np.add.reduceat(tag_prior, topic_start[:-1])[tag_topic]  # sums to 1 per topic

    # --- users: attributes and latent preferences ---------------------------------------
    age = rng.integers(0, len(AGE_BUCKETS), n_u)
    region = rng.integers(0, len(REGIONS), n_u)
    favoured = min(2, n_k)
    age_boost = np.zeros((len(AGE_BUCKETS), n_k))
    region_boost = np.zeros((len(REGIONS), n_k))
    for boost in (age_boost, region_boost):
        for row in boost:
            row[rng.choice(n_k, favoured, replace=False)] = 1.0
    alpha = topic_alpha * (1.0 + attribute_boost * (age_boost[age] + region_boost[region]))
    topic_pref = rng.standard_gamma(alpha.astype(np.float32), dtype=np.float32) + np.float32(1e-12)
    topic_pref /= topic_pref.sum(axis=1, keepdims=True)
    tag_conc = (tag_alpha * tag_prior * topic_size[tag_topic]).astype(np.float32)
    if sparse:
        affinity_truth = _sparse_affinity(rng, topic_pref, tag_conc, topic_start)
    else:
        within = rng.standard_gamma(np.broadcast_to(tag_conc, (n_u, n_t)), dtype=np.float32)
        within += np.float32(1e-12)
        within /= np.add.reduceat(within, topic_start[:-1], axis=1)[:, tag_topic]
        affinity = topic_pref[:, tag_topic] * within
        affinity /= affinity.sum(axis=1, keepdims=True)
        del within
        affinity_truth = {"user_tag_affinity": affinity}
    unknown = rng.random((2, n_u)) < unknown_attribute_share
    age_obs = np.where(unknown[0], -1, age).astype(np.int32)
    region_obs = np.where(unknown[1], -1, region).astype(np.int32)

    # --- items: topic, tags, decisive tags ----------------------------------------------
    item_topic = rng.integers(0, n_k, n_i).astype(np.int32)
    max_tags = min(_MAX_ITEM_TAGS, n_t)
    n_item_tags = np.minimum(
        rng.choice(np.arange(_MIN_ITEM_TAGS, _MAX_ITEM_TAGS + 1), n_i, p=_ITEM_TAG_COUNT_P),
        n_t,
    )
    # Weighted sampling without replacement via Gumbel-top-k over per-item tag weights.
    off_weight = _OFF_TOPIC_SHARE / (1 - _OFF_TOPIC_SHARE) / (n_k - 1) if n_k > 1 else 0.0
    log_prior = np.log(tag_prior).astype(np.float32)
    off_log_prior = log_prior + np.float32(np.log(off_weight) if off_weight > 0 else -np.inf)
    top = np.empty((n_i, max_tags), dtype=np.intp)
    step = max(1, _CELL_BLOCK // n_t)
    for lo in range(0, n_i, step):  # blocks of items: the same stream as one [I, T] draw
        hi = min(lo + step, n_i)
        keys = np.where(tag_topic[None, :] == item_topic[lo:hi, None], log_prior, off_log_prior)
        keys -= np.log(-np.log(rng.random((hi - lo, n_t), dtype=np.float32) + np.float32(1e-12)))
        block = np.argpartition(-keys, max_tags - 1, axis=1)[:, :max_tags]
        top[lo:hi] = np.take_along_axis(
            block, np.argsort(-np.take_along_axis(keys, block, axis=1), axis=1), axis=1
        )
        del keys
    slot = np.arange(max_tags)[None, :]
    in_item = slot < n_item_tags[:, None]
    item_rows = np.repeat(np.arange(n_i), n_item_tags)
    item_tags = Ragged.from_pairs(item_rows, top[in_item], n_i)

    n_decisive = np.where(rng.random(n_i) < 0.5, 1, 2)
    n_decisive = np.maximum(np.minimum(n_decisive, n_item_tags - 1), 1)
    shuffle = np.where(in_item, rng.random((n_i, max_tags)), np.inf)
    decisive_order = np.take_along_axis(top, np.argsort(shuffle, axis=1), axis=1)
    is_decisive = slot < n_decisive[:, None]
    decisive = Ragged.from_pairs(
        np.repeat(np.arange(n_i), n_decisive), decisive_order[is_decisive], n_i
    )
    key_tag = decisive_order[:, 0]

    # --- items: privileged fields and popularity ----------------------------------------
    category = np.where(
        rng.random(n_i) < category_noise, rng.integers(0, n_k, n_i), item_topic
    ).astype(np.int32)
    slot_w = (np.arange(brands_per_tag) + 1.0) ** -1.5
    brand_slot = rng.choice(brands_per_tag, n_i, p=slot_w / slot_w.sum())
    raw_brand = key_tag.astype(np.int64) * brands_per_tag + brand_slot
    random_brand = rng.random(n_i) < _RANDOM_BRAND_SHARE
    raw_brand[random_brand] = rng.integers(0, n_t * brands_per_tag, int(random_brand.sum()))
    boutique = rng.random(n_i) < boutique_brand_share
    raw_brand[boutique] = n_t * brands_per_tag + np.flatnonzero(boutique)
    used_brands, brand = np.unique(raw_brand, return_inverse=True)
    brand_names = [f"brand{j:05d}" for j in range(len(used_brands))]

    popularity = (rng.permutation(n_i) + 1.0) ** -popularity_exponent
    popularity /= popularity.sum()

    # --- impressions ---------------------------------------------------------------------
    truth_partial = {
        **affinity_truth,
        "user_topic_affinity": topic_pref,
        "item_category": category,
        "item_decisive_offsets": decisive.offsets,
        "item_decisive_tags": decisive.values,
        "click_params": np.array([base_logit, decisive_weight, category_weight]),
    }
    block = _IMPRESSION_USER_BLOCK if sparse else n_u  # one block: the stream of small worlds
    parts = [
        _impressions(rng, lo, min(lo + block, n_u), impressions_per_user, personal_share,
                     popularity, item_topic, truth_partial)
        for lo in range(0, n_u, block)
    ]  # fmt: skip
    inter_user, inter_item, inter_time, inter_label, click_prob = (
        np.concatenate(arrays) for arrays in zip(*parts, strict=True)
    )
    del parts
    n = len(inter_user)

    # Coalition = the item's tag set. Gathering from the small padded [I, 6] matrix is several
    # times faster than a generic ragged take at millions of rows.
    inter_len = n_item_tags[inter_item]
    inter_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(inter_len, out=inter_offsets[1:])
    item_padded = np.sort(np.where(in_item, top, n_t), axis=1).astype(np.int32)
    inter_tags = Ragged(inter_offsets, item_padded[inter_item][in_item[inter_item]])
    impressions_per_item = np.bincount(inter_item, minlength=n_i)
    tag_counts = np.bincount(
        item_tags.values, weights=impressions_per_item[item_tags.row_ids()], minlength=n_t
    ).astype(np.int64)

    ds = RawDataset(
        name="synthetic",
        tag_names=tag_names,
        user_ids=[f"u{u}" for u in range(n_u)],
        item_ids=[f"i{i}" for i in range(n_i)],
        inter_user=inter_user,
        inter_item=inter_item,
        inter_label=inter_label,
        inter_time=inter_time,
        inter_tags=inter_tags,
        item_tags=item_tags,
        tag_counts=tag_counts,
        privileged={
            "category": (
                Vocabulary(list(names)),
                Ragged(np.arange(n_i + 1, dtype=np.int64), category.copy()),
            ),
            "brand": (
                Vocabulary(brand_names),
                Ragged(np.arange(n_i + 1, dtype=np.int64), brand.astype(np.int32)),
            ),
        },
        user_attributes={
            "age": (Vocabulary(list(AGE_BUCKETS)), age_obs),
            "region": (Vocabulary(list(REGIONS)), region_obs),
        },
        explicit_negatives=True,
        truth={
            **truth_partial,
            "tag_topic": tag_topic,
            "item_topic": item_topic,
            "item_popularity": popularity,
            "inter_click_prob": click_prob,
        },
    )
    ds.validate()
    return ds


def click_probability(
    truth: dict[str, np.ndarray], users: np.ndarray, items: np.ndarray
) -> np.ndarray:
    """The planted click probability of each (user, item) pair (see the module docstring).

    ``truth`` needs the user-tag affinity (``user_tag_affinity`` or its sparse CSR form),
    ``user_topic_affinity``, ``item_category``, ``item_decisive_offsets``,
    ``item_decisive_tags`` and ``click_params``. Vectorised, so the A/B simulator can score
    whole ranked lists at once; pairs go in chunks so memory stays bounded at 10^8 pairs.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if users.shape != items.shape:
        raise ValueError(f"users {users.shape} and items {items.shape} must have the same shape")
    if "user_tag_affinity" in truth:
        affinity = truth["user_tag_affinity"]
        top_affinity = affinity.max(axis=1)

        def lookup(u: np.ndarray, t: np.ndarray) -> np.ndarray:
            return affinity[u, t]
    else:
        rows, ids, values = (truth[f"user_tag_{k}"] for k in ("offsets", "ids", "values"))
        top_affinity = np.maximum.reduceat(values, rows[:-1])

        def lookup(u: np.ndarray, t: np.ndarray) -> np.ndarray:
            return _csr_lookup(rows, ids, values, u, t)

    topic_pref = truth["user_topic_affinity"]
    base, w_dec, w_cat = (float(x) for x in truth["click_params"])
    offsets = np.asarray(truth["item_decisive_offsets"], dtype=np.int64)
    lengths = np.diff(offsets)
    # Pad decisive tags per item to [I, max_len] (tiny) instead of expanding per pair.
    width = max(int(lengths.max(initial=0)), 1)
    col = np.arange(width)[None, :]
    valid = col < lengths[:, None]
    padded = np.zeros((len(lengths), width), dtype=np.int64)
    padded[valid] = truth["item_decisive_tags"]

    top_topic = topic_pref.max(axis=1)
    flat_u, flat_i = users.ravel(), items.ravel()
    out = np.empty(len(flat_u), dtype=np.float64)
    for lo in range(0, len(flat_u), _PAIR_CHUNK):
        u, i = flat_u[lo : lo + _PAIR_CHUNK], flat_i[lo : lo + _PAIR_CHUNK]
        gathered = lookup(u[:, None], padded[i]) * valid[i]
        dec_aff = gathered.sum(axis=1, dtype=np.float64) / np.maximum(lengths[i], 1)
        s_dec = dec_aff / top_affinity[u]
        s_cat = topic_pref[u, truth["item_category"][i]] / top_topic[u]
        out[lo : lo + _PAIR_CHUNK] = _sigmoid(base + w_dec * s_dec + w_cat * s_cat)
    return out.reshape(users.shape)


def _csr_lookup(
    offsets: np.ndarray, ids: np.ndarray, values: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """``values`` at (row, col) of a CSR matrix whose ids ascend within a row; 0 if absent.

    A vectorised binary search inside each row: no dense row and no global key array.
    """
    rows, cols = np.broadcast_arrays(rows, cols)
    lo, end = offsets[rows], offsets[rows + 1]
    hi = end.copy()
    last = len(ids) - 1
    while (active := lo < hi).any():
        mid = (lo + hi) // 2
        right = active & (ids[np.minimum(mid, last)] < cols)
        lo = np.where(right, mid + 1, lo)
        hi = np.where(active & ~right, mid, hi)
    at = np.minimum(lo, last)
    return np.where((lo < end) & (ids[at] == cols), values[at], np.float32(0.0))
