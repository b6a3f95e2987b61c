"""``python -m training prepare`` end to end: real processes, real files, real data sets."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.cli import main
from training.data.processed import TEST, TRAIN, ProcessedDataset

STATS_KEYS = {
    "users", "items", "tags", "train_users", "valid_users", "test_users", "train_samples",
    "positives", "privileged",
}  # fmt: skip


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training", *args], capture_output=True, text=True, check=False
    )


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


def write_hetrec_movielens(path: Path, *, users: int = 30, bad_line: str | None = None) -> None:
    """A small movielens-2k folder in the real format (tabs, header, a Latin-1 byte)."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = ["userID\tmovieID\ttagID\ttimestamp"]
    for u in range(1, users + 1):
        for k, movie in enumerate(rng.choice(20, size=6, replace=False)):
            for tag in rng.choice(8, size=2, replace=False):
                lines.append(f"{u}\t{movie + 1}\t{tag + 1}\t{(1_000_000 + 1000 * k) * 1000}")
    if bad_line is not None:
        lines.insert(5, bad_line)
    (path / "user_taggedmovies-timestamps.dat").write_text("\n".join(lines) + "\n")
    tags = b"id\tvalue\n" + b"".join(f"{t}\ttag{t}\n".encode() for t in range(1, 8))
    (path / "tags.dat").write_bytes(tags + b"8\tcaf\xe9\n")
    genres = "".join(f"{m}\t{'Drama' if m % 2 else 'Comedy'}\n" for m in range(1, 21))
    (path / "movie_genres.dat").write_text("movieID\tgenre\n" + genres)
    directors = "".join(f"{m}\td{m % 4}\tDirector {m % 4}\n" for m in range(1, 21))
    (path / "movie_directors.dat").write_text("movieID\tdirectorID\tdirectorName\n" + directors)


def test_help_explains_every_flag():
    done = run_cli("prepare", "--help")
    assert done.returncode == 0
    flags = "--dataset --path --out --seed --min-tag-count --negative-ratio --valid-fraction"
    for flag in [*flags.split(), "--tau", "--credit", "hetrec-lastfm", "movielens-tags"]:
        assert flag in done.stdout


def test_prepare_synthetic_is_reproducible_by_seed(tmp_path):
    args = ("prepare", "--dataset", "synthetic", "--users", "300", "--items", "120", "--tags", "40")
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert main([*args, "--out", str(tmp_path / "c"), "--seed", "1"]) == 0
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a")["dataset.npz"] != digest(tmp_path / "c")["dataset.npz"]
    stats = json.loads((tmp_path / "a" / "stats.json").read_text())
    assert set(stats) >= STATS_KEYS
    assert stats["users"] == 300 and stats["test_users"] == 60
    data = ProcessedDataset.load(tmp_path / "a")
    assert data.truth["user_tag_affinity"].shape[0] == 300


def test_prepare_hetrec_fixture_in_a_real_process(tmp_path):
    write_hetrec_movielens(tmp_path / "raw")
    done = run_cli(
        "prepare", "--dataset", "hetrec-movielens", "--path", str(tmp_path / "raw"),
        "--out", str(tmp_path / "out"), "--min-tag-count", "2", "--negative-ratio", "2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["users"] == 30 and stats["test_users"] == 6
    assert stats["privileged"] == {"genre": 3, "director": 5}
    data = ProcessedDataset.load(tmp_path / "out")
    assert data.inter_sampled.sum() == 2 * (data.inter_is_sample & ~data.inter_sampled).sum()
    # one summary line, not the whole stats file
    assert "30 users (" in done.stdout and '"users"' not in done.stdout


def test_the_wrong_dataset_for_a_folder_suggests_the_right_one(tmp_path):
    write_hetrec_movielens(tmp_path / "raw")
    done = run_cli(
        "prepare", "--dataset", "movielens", "--path", str(tmp_path / "raw"),
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert done.returncode == 2
    assert "ratings.csv" in done.stderr and "looks like --dataset hetrec-movielens" in done.stderr


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("7\tx\t3\t1000", "movieID"),
        ("7,3,3,1000", "expected tab-separated"),
    ],
)
def test_malformed_input_exits_2_naming_file_and_line(tmp_path, bad_line, message):
    write_hetrec_movielens(tmp_path / "raw", bad_line=bad_line)
    done = run_cli(
        "prepare", "--dataset", "hetrec-movielens", "--path", str(tmp_path / "raw"),
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert done.returncode == 2
    assert "user_taggedmovies-timestamps.dat:6" in done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "dataset.npz").exists()


def test_missing_path_is_a_clear_error(tmp_path):
    done = run_cli("prepare", "--dataset", "movielens", "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "--path is required" in done.stderr
    done = run_cli(
        "prepare", "--dataset", "movielens", "--path", str(tmp_path / "nope"),
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert done.returncode == 2 and "no such directory" in done.stderr


def check_protocol_invariants(data: ProcessedDataset) -> None:
    train = data.single_tag_samples("train")
    assert (data.user_split[train.user] == TRAIN).all()
    for u in range(data.n_users):
        history, samples = data.history(u), data.samples_of(u)
        if samples.stop > samples.start:
            assert data.inter_time[history].max() < data.inter_time[samples].min()
    positives = np.flatnonzero(data.inter_is_sample & (data.inter_label == 1))
    sums = np.add.reduceat(data.sve_weight, data.inter_tags.offsets[:-1])[positives]
    np.testing.assert_allclose(sums, data.inter_tags.lengths()[positives], rtol=1e-4)


@pytest.mark.realdata
def test_prepare_real_hetrec_movielens_2k(hetrec_movielens_2k, tmp_path):
    assert main(["prepare", "--dataset", "hetrec-movielens", "--path",
                 str(hetrec_movielens_2k), "--out", str(tmp_path)]) == 0  # fmt: skip
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["tags"] == 1586  # dataset README: 1,586 tags seen >= 5 times
    assert stats["privileged"]["genre"] == 20
    data = ProcessedDataset.load(tmp_path)
    check_protocol_invariants(data)
    assert stats["test_users"] == (data.user_split == TEST).sum() == round(0.2 * data.n_users)


@pytest.mark.realdata
def test_prepare_real_ml_latest_small(ml_latest_small, tmp_path):
    assert main(["prepare", "--dataset", "movielens", "--path", str(ml_latest_small),
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["tags"] == 184  # dataset README: 184 tags seen >= 5 times
    assert stats["users"] == 610 and stats["sampled_negatives"] == 0
    data = ProcessedDataset.load(tmp_path)
    check_protocol_invariants(data)
    assert (data.inter_label == 0).any()  # explicit negatives: ratings below 4


@pytest.mark.realdata
def test_prepare_real_ml_10m_tags(ml_10m_tags, tmp_path):
    assert main(["prepare", "--dataset", "movielens-tags", "--path", str(ml_10m_tags),
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    stats = json.loads((tmp_path / "stats.json").read_text())
    # 2,857 tags applied >= 5 times; the datasets README's 2,858 counts a lone no-break space
    assert stats["tags"] == 2857
    assert stats["users"] == 3397  # of 4,009: the others tagged only rare tags
    assert stats["privileged"] == {"genre": 20}  # 19 genres and "others"
    assert stats["sampled_negatives"] > 0
    data = ProcessedDataset.load(tmp_path)
    check_protocol_invariants(data)
    assert stats["test_users"] == (data.user_split == TEST).sum() == round(0.2 * data.n_users)
