"""Theme ranking: the catalogue of theme cards (``themes.json``) and their retrieval and
re-ranking for a user's tag scores, and the A/B control ranker (by a theme statistic).

Other packages import from here, never from the modules below.
"""

from service.ranking.popular import popular_ranking
from service.ranking.themes import (
    RankedTheme,
    Theme,
    ThemeCatalogue,
    ThemeCatalogueError,
    ThemeTag,
    UnknownThemesError,
)

__all__ = [
    "RankedTheme",
    "Theme",
    "ThemeCatalogue",
    "ThemeCatalogueError",
    "ThemeTag",
    "UnknownThemesError",
    "popular_ranking",
]
