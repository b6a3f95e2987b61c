"""Which loader reads which data set, and the protocol defaults that go with it.

Defaults follow the CTMVM paper: tags seen fewer than 5 times are dropped on MovieLens-style
data and fewer than 15 times on the sparser social-tagging sets (Delicious, Last.fm); the
SVE temperature is 0.1 for MovieLens and 0.5 for Delicious. ``family`` groups sets that share
a tuned training config: MovieLens tag applications are self-tagged like HetRec's, so
``movielens-tags`` trains with the ``hetrec`` config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from training.data.raw import RawDataset


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    family: str  # selects the tuned training config (movielens | hetrec | synthetic)
    min_tag_count: int
    tau: float
    needs_path: bool
    description: str

    def load(self, path: Path | None, **synthetic_sizes: int) -> RawDataset:
        """Read (or, for synthetic data, generate) the raw data set."""
        if self.name == "synthetic":
            from training.data.synthetic import generate_synthetic

            return generate_synthetic(**synthetic_sizes)
        if path is None:
            raise ValueError(f"--path is required for dataset {self.name!r}")
        return _loader(self.name)(Path(path))


def _loader(name: str) -> Callable[[Path], RawDataset]:
    from training.data import hetrec, movielens, movielens_tags

    return {
        "movielens": movielens.load_movielens,
        "movielens-tags": movielens_tags.load_movielens_tags,
        "hetrec-movielens": hetrec.load_hetrec_movielens,
        "hetrec-delicious": hetrec.load_hetrec_delicious,
        "hetrec-lastfm": hetrec.load_hetrec_lastfm,
    }[name]


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="movielens",
            family="movielens",
            min_tag_count=5,
            tau=0.1,
            needs_path=True,
            description="MovieLens CSV (ratings.csv, movies.csv, tags.csv); label = rating >= 4",
        ),
        DatasetSpec(
            name="movielens-tags",
            family="hetrec",
            min_tag_count=5,
            tau=0.1,
            needs_path=True,
            description="MovieLens tags without ratings (ML-10M .dat, ML-20M/25M .csv); "
            "privileged: genre",
        ),
        DatasetSpec(
            name="hetrec-movielens",
            family="hetrec",
            min_tag_count=5,
            tau=0.1,
            needs_path=True,
            description="HetRec 2011 movielens-2k tag assignments; privileged: genre, director",
        ),
        DatasetSpec(
            name="hetrec-delicious",
            family="hetrec",
            min_tag_count=15,
            tau=0.5,
            needs_path=True,
            description="HetRec 2011 delicious-2k bookmarks; privileged: url principal, bookmark",
        ),
        DatasetSpec(
            name="hetrec-lastfm",
            family="hetrec",
            min_tag_count=15,
            tau=0.5,
            needs_path=True,
            description="HetRec 2011 lastfm-2k artist tags; privileged: artist",
        ),
        DatasetSpec(
            name="synthetic",
            family="synthetic",
            min_tag_count=1,
            tau=0.5,
            needs_path=False,
            description="generated world with planted user-tag preferences (no files needed)",
        ),
    )
}


SIGNATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("hetrec-movielens", ("user_taggedmovies-timestamps.dat", "user_taggedmovies.dat")),
    ("hetrec-delicious", ("user_taggedbookmarks-timestamps.dat", "user_taggedbookmarks.dat")),
    ("hetrec-lastfm", ("user_taggedartists-timestamps.dat", "user_taggedartists.dat")),
    ("movielens", ("ratings.csv",)),
    ("movielens-tags", ("tags.dat", "tags.csv")),
)
"""A file that only one layout has, most specific first (a MovieLens folder with ratings
is ``movielens`` even though it has tags.csv too)."""


def guess_dataset(path: Path) -> str | None:
    """The ``--dataset`` whose files ``path`` holds, to suggest it when another was asked."""
    for name, files in SIGNATURES:
        if any((Path(path) / f).is_file() for f in files):
            return name
    return None
