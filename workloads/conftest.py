"""Load the workload plugin from a source checkout (an installed kpool registers it as `kpool`)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    pm = config.pluginmanager
    if not (pm.has_plugin("kpool") or pm.has_plugin("harness.pytest_plugin")):
        pm.import_plugin("harness.pytest_plugin")
