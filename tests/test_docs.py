"""The README documents every setting and every make target users are told about."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _settings_variables():
    source = (ROOT / "dashboard" / "settings.py").read_text()
    names = set(re.findall(r'env_(?:str|bool|int|list|choice)\(\s*"([A-Z0-9_]+)"', source))
    names |= set(re.findall(r'_raw\("([A-Z0-9_]+)"\)', source))
    return names


def test_every_setting_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    names = _settings_variables() | {"DATABASE_URL"}
    assert len(names) > 10
    missing = sorted(name for name in names if f"`{name}`" not in readme)
    assert not missing, f"settings missing from README.md: {missing}"


def test_readme_quick_start_is_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme


def _rendered_metrics():
    from collector import stats

    return sorted(
        {line.split()[2] for line in stats.render().splitlines() if line.startswith("# TYPE ")}
    )


@pytest.mark.parametrize("metric", _rendered_metrics())
def test_every_metric_on_the_collector_port_is_documented(metric):
    assert f"`{metric}`" in (ROOT / "README.md").read_text(), f"{metric} is not in README.md"
