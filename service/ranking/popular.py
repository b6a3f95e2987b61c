"""The A/B control ranker: themes by a historical statistic (e.g. CTR), the same for every
user, like the paper's statistics-based control."""

from __future__ import annotations

from service.ranking.themes import RankedTheme, ThemeCatalogue, ThemeTag


def popular_ranking(
    catalogue: ThemeCatalogue, k: int, candidates: list[str] | None, by: str
) -> list[RankedTheme]:
    """The top ``k`` themes (of ``candidates`` when given) by ``stats[by]``; each score is
    that statistic, and no tag carries a per-user contribution."""
    allowed = set(candidates) if candidates is not None else None
    ranked = []
    for theme in catalogue.popular(len(catalogue) if allowed else k, by=by):
        if allowed is not None and theme.theme_id not in allowed:
            continue
        tags = tuple(
            ThemeTag(tag_id=t, tag=name, weight=w, contribution=0.0)
            for t, name, w in zip(theme.tag_ids, theme.tag_names, theme.weights, strict=True)
        )
        ranked.append(
            RankedTheme(theme.theme_id, theme.title, float(theme.stats.get(by, 0.0)), tags)
        )
        if len(ranked) == k:
            break
    return ranked
