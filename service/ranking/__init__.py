"""Theme ranking: the catalogue of theme cards (``themes.json``) and their retrieval and
re-ranking for a user's tag scores.

Other packages import from here, never from the modules below.
"""

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
]
