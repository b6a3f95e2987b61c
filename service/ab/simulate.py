"""``python -m service simulate``: replay users whose true interests are known against a
running API, click with a position-biased model, post the clicks, print the report.

Click model (documented, seeded): the user examines position ``p`` (0-based) with
probability ``(p + 1) ** -position_decay`` and clicks an examined theme with probability
``floor + (ceiling - floor) * relevance``, where ``relevance = Σ_t weight(theme, t) ·
truth(user, t)`` is in [0, 1] (truth weights are scaled so the user's strongest interest
is 1). Each user's draws come from its own seeded generator, so a run is reproducible
whatever the request concurrency.

Segments: with a segment mix (``home:0.7,search:0.3``) each session draws the segment it
requests under, and a *planted* effect (``search:profile:1.5``) multiplies the click
probability of one arm in one segment (capped at 1). An A/A experiment with a planted
segment is the check that the report's per-segment breakdown finds an effect where, and
only where, there is one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from tqdm import tqdm


@dataclass(frozen=True)
class ClickModel:
    position_decay: float = 0.7
    floor: float = 0.02
    ceiling: float = 0.6

    def click_probability(self, position: int, relevance: float) -> float:
        examine = (position + 1) ** -self.position_decay
        return examine * (self.floor + (self.ceiling - self.floor) * relevance)


class SimulationError(RuntimeError):
    """The run could not proceed (bad truth file, API refusing requests)."""


@dataclass(frozen=True)
class Plant:
    """Clicks of ``arm`` in ``segment`` are ``factor`` times as likely."""

    segment: str
    arm: str
    factor: float


def parse_segments(text: str) -> dict[str, float]:
    """``home:0.7,search:0.3`` -> relative weights (a bare name weighs 1)."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition(":")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"segment weight of {name!r} is not a number: {weight!r}") from None
        if not name or value <= 0:
            raise ValueError(f"expected NAME[:WEIGHT>0], got {part!r}")
        mix[name] = value
    if not mix:
        raise ValueError("no segment given")
    return mix


def parse_plant(text: str) -> Plant:
    """``search:profile:1.5`` -> :class:`Plant`."""
    parts = text.split(":")
    try:
        segment, arm, factor = parts[0], parts[1], float(parts[2])
    except (IndexError, ValueError):
        segment, arm, factor = "", "", -1.0
    if len(parts) != 3 or not segment or not arm or factor < 0:
        raise ValueError(f"expected SEGMENT:ARM:FACTOR (factor >= 0), got {text!r}")
    return Plant(segment, arm, factor)


def read_truth(path: Path) -> list[tuple[str, dict[int, float]]]:
    """(user_id, {tag_id: weight}) per line of a truth file written by
    ``python -m training truth``."""
    users = []
    with Path(path).open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
                users.append((row["user_id"], {int(t): float(w) for t, w in row["tags"]}))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                raise SimulationError(f"{path}:{number}: not a truth record ({error})") from None
    return users


def relevance(theme: dict[str, Any], truth: dict[int, float]) -> float:
    return sum(t["weight"] * truth.get(t["tag_id"], 0.0) for t in theme["tags"])


async def _simulate_user(
    http: httpx.AsyncClient,
    index: int,
    user: tuple[str, dict[int, float]],
    experiment: str,
    k: int,
    model: ClickModel,
    seed: int,
    sessions: int,
    segments: dict[str, float] | None = None,
    plants: dict[tuple[str, str], float] | None = None,
) -> None:
    """``sessions`` visits of one user: a ranking each, clicks drawn per shown theme."""
    user_id, truth = user
    rng = np.random.default_rng([seed, index])
    # segments come from a generator of their own: clicks stay those of a run without them
    segment_rng = np.random.default_rng([seed, index, 1])
    names = list(segments or {})
    shares = np.array([(segments or {})[n] for n in names], dtype=np.float64)
    for _ in range(sessions):
        body: dict[str, Any] = {"user_id": user_id, "k": k, "experiment": experiment}
        segment = None
        if names:
            segment = names[int(segment_rng.choice(len(names), p=shares / shares.sum()))]
            body["segment"] = segment
        response = await http.post("/themes/rank", json=body)
        if response.status_code != 200:
            raise SimulationError(f"POST /themes/rank for {user_id}: {response.status_code} "
                                  f"{response.text[:300]}")  # fmt: skip
        ranking = response.json()
        if ranking.get("exposure_logged") is False:  # its clicks would be refused (404)
            raise SimulationError(
                f"POST /themes/rank for {user_id}: the API could not log the exposure "
                "(its Redis was unreachable); the experiment's counts would be incomplete"
            )
        factor = (plants or {}).get((segment or "", ranking["arm"]), 1.0)
        for position, theme in enumerate(ranking["themes"]):
            probability = model.click_probability(position, relevance(theme, truth))
            if rng.random() >= min(1.0, probability * factor):
                continue
            event = {
                "event_id": f"{ranking['request_id']}-{position}",
                "request_id": ranking["request_id"],
                "type": "click",
                "theme_id": theme["theme_id"],
            }
            posted = await http.post("/events", json=event)
            if posted.status_code != 202:
                raise SimulationError(f"POST /events: {posted.status_code} {posted.text[:300]}")


async def simulate(
    base_url: str,
    experiment: str,
    users: list[tuple[str, dict[int, float]]],
    *,
    k: int = 10,
    model: ClickModel | None = None,
    seed: int = 0,
    sessions: int = 1,
    concurrency: int = 16,
    progress: bool = True,
    segments: dict[str, float] | None = None,
    plants: tuple[Plant, ...] = (),
) -> dict[str, Any]:
    """Replay ``users`` (``sessions`` visits each); returns the API's report afterwards.
    Several sessions per user suit small real test sets: the report's user-level CIs
    account for the correlation between one user's sessions. ``segments``: the mix of
    segments sessions request under; ``plants``: effects planted in one arm of a segment."""
    model = model or ClickModel()
    planted = {(p.segment, p.arm): p.factor for p in plants}
    unknown = sorted({p.segment for p in plants} - set(segments or {}))
    if unknown:
        raise SimulationError(f"planted segments {unknown} are not in the segment mix")
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as http:
        semaphore = asyncio.Semaphore(concurrency)
        bar = tqdm(total=len(users), desc=f"simulate {experiment}", unit="user",
                   disable=not progress)  # fmt: skip

        async def one(index: int, user: tuple[str, dict[int, float]]) -> None:
            async with semaphore:
                await _simulate_user(http, index, user, experiment, k, model, seed, sessions,
                                     segments, planted)  # fmt: skip
                bar.update()

        try:
            await asyncio.gather(*(one(i, u) for i, u in enumerate(users)))
        finally:
            bar.close()
        report = await http.get(f"/experiments/{experiment}/report")
        if report.status_code != 200:
            raise SimulationError(f"report: {report.status_code} {report.text[:300]}")
        return report.json()


def pick_users(
    users: list[tuple[str, dict[int, float]]], n: int, seed: int
) -> list[tuple[str, dict[int, float]]]:
    if n > len(users):
        raise SimulationError(
            f"--users {n}: the truth file has only {len(users)} users with known interests"
        )
    order = np.random.default_rng(seed).permutation(len(users))[:n]
    return [users[i] for i in sorted(order)]


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"experiment {report['experiment']} (control: {report['control']})",
        f"{'arm':<12}{'users':>8}{'impressions':>13}{'clicks':>9}{'CTR':>9}   95% CI",
    ]
    for name, arm in report["arms"].items():
        lo, hi = arm["ctr_ci"]
        ci = "-" if lo is None else f"[{lo:.4f}, {hi:.4f}]"
        ctr = "-" if arm["ctr"] is None else f"{arm['ctr']:.4f}"
        lines.append(
            f"{name:<12}{arm['users']:>8}{arm['impressions']:>13}{arm['clicks']:>9}{ctr:>9}   {ci}"
        )
    lines.extend(report.get("summary", []))
    return "\n".join(lines)
