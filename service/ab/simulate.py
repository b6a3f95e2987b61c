"""``python -m service simulate``: replay users whose true interests are known against a
running API, click with a position-biased model, post the clicks, print the report.

Click model (documented, seeded): the user examines position ``p`` (0-based) with
probability ``(p + 1) ** -position_decay`` and clicks an examined theme with probability
``floor + (ceiling - floor) * relevance``, where ``relevance = Σ_t weight(theme, t) ·
truth(user, t)`` is in [0, 1] (truth weights are scaled so the user's strongest interest
is 1). Each user's draws come from its own seeded generator, so a run is reproducible
whatever the request concurrency.
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
) -> None:
    """``sessions`` visits of one user: a ranking each, clicks drawn per shown theme."""
    user_id, truth = user
    rng = np.random.default_rng([seed, index])
    for _ in range(sessions):
        response = await http.post(
            "/themes/rank", json={"user_id": user_id, "k": k, "experiment": experiment}
        )
        if response.status_code != 200:
            raise SimulationError(f"POST /themes/rank for {user_id}: {response.status_code} "
                                  f"{response.text[:300]}")  # fmt: skip
        ranking = response.json()
        for position, theme in enumerate(ranking["themes"]):
            if rng.random() >= model.click_probability(position, relevance(theme, truth)):
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
) -> dict[str, Any]:
    """Replay ``users`` (``sessions`` visits each); returns the API's report afterwards.
    Several sessions per user suit small real test sets: the report's user-level CIs
    account for the correlation between one user's sessions."""
    model = model or ClickModel()
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as http:
        semaphore = asyncio.Semaphore(concurrency)
        bar = tqdm(total=len(users), desc=f"simulate {experiment}", unit="user",
                   disable=not progress)  # fmt: skip

        async def one(index: int, user: tuple[str, dict[int, float]]) -> None:
            async with semaphore:
                await _simulate_user(http, index, user, experiment, k, model, seed, sessions)
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
