"""The service CLI and the TAGPROFILE_* environment: --help lists every setting, a bad
value names the variable or flag that was set, a misspelled variable is warned about, and
both CLIs are installed as console scripts."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from service.cli import main
from service.envvars import env_name, unknown_variables
from service.settings import Settings
from tests.conftest import PROJECT_ROOT


@pytest.mark.parametrize("command", ["serve", "load", "precompute"])
def test_help_lists_every_setting_with_its_default(command, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for field, info in Settings.model_fields.items():
        line = next((ln for ln in out.splitlines() if ln.split()[:1] == [env_name(field)]), None)
        assert line is not None, f"{env_name(field)} missing from {command} --help"
        assert (info.description or "") in line
    assert "[artifacts/bundles/synthetic-ctmvm]" in out and "[unset]" in out
    if command == "serve":
        assert "--experiments" in out


def test_a_bad_variable_is_named_as_it_was_set(monkeypatch, capsys) -> None:
    monkeypatch.setenv("TAGPROFILE_MAX_K", "0")
    monkeypatch.setenv("TAGPROFILE_DEVICE", "gpu")
    assert main(["serve", "--port", "99999"]) == 2
    err = capsys.readouterr().err
    assert "invalid setting TAGPROFILE_MAX_K='0': Input should be greater than or equal to 1" in err
    assert "invalid setting TAGPROFILE_DEVICE='gpu'" in err
    assert "invalid setting --port=99999" in err  # a flag is named as the flag
    assert "max_k" not in err and "TAGPROFILE_PORT" not in err


def test_cluster_mode_without_a_url_stops_the_command(monkeypatch, capsys) -> None:
    monkeypatch.delenv("TAGPROFILE_REDIS_URL", raising=False)
    monkeypatch.setenv("TAGPROFILE_REDIS_CLUSTER", "true")
    assert main(["precompute"]) == 2
    err = capsys.readouterr().err
    assert "invalid settings: TAGPROFILE_REDIS_CLUSTER=true needs TAGPROFILE_REDIS_URL" in err


def test_a_misspelled_variable_is_warned_about(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setenv("TAGPROFILE_MAXK", "5")
    monkeypatch.setenv("TAGPROFILE_IMAGE", "tagprofile:gpu")  # compose's, not a setting
    assert main(["load", "--bundle", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.splitlines()
    warnings = [line for line in err if line.startswith("warning:")]
    assert warnings == [
        "warning: TAGPROFILE_MAXK is not a tagprofile setting, ignored; "
        "did you mean TAGPROFILE_MAX_K?"
    ]


def test_unknown_variables_without_a_close_setting_get_no_suggestion() -> None:
    environ = {"TAGPROFILE_WHATEVER": "1", "TAGPROFILE_PORT": "1", "HOME": "/root",
               "tagprofile_redis_ulr": "x"}  # fmt: skip
    assert unknown_variables(environ) == [
        "warning: TAGPROFILE_WHATEVER is not a tagprofile setting, ignored",
        "warning: tagprofile_redis_ulr is not a tagprofile setting, ignored; "
        "did you mean TAGPROFILE_REDIS_URL?",
    ]


def test_serve_takes_the_experiments_file_as_a_flag(service_bundle, tmp_path, capsys) -> None:
    bad = tmp_path / "experiments.yaml"
    bad.write_text("experiments:\n  - {name: x, salt: s, control: a, arms: [{name: a}]}\n")
    code = main(["serve", "--bundle", str(service_bundle), "--experiments", str(bad),
                 "--port", "1"])  # fmt: skip
    assert code == 2
    assert "experiments[0]" in capsys.readouterr().err


def test_both_clis_are_console_scripts() -> None:
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"tagprofile": "service.cli:main", "tagprofile-train": "training.cli:main"}
    installed = Path(sys.executable).parent / "tagprofile"
    if not installed.exists():
        pytest.skip("the project is not installed with its console scripts (make install)")
    run = subprocess.run([str(installed), "serve", "--help"], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert run.returncode == 0 and "TAGPROFILE_BUNDLE" in run.stdout
