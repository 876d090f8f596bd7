"""What every test shares: a framework's global settings changed by one test are back as they were for the next."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


def _hidden(config: object) -> list[str]:
    """torch config settings that a ``delattr`` hid (torch's config module hides rather than deletes them)."""
    entries = getattr(config, "_config", {})
    return [name for name, entry in entries.items() if getattr(entry, "hide", False)]


@pytest.fixture(autouse=True)
def _torch_compile_config_restored() -> Iterator[None]:
    """A test that changes torch.compile's configuration leaves the next test the configuration it found and an
    empty dynamo cache, so compiled tests do not depend on their order."""
    config = sys.modules.get("torch._dynamo.config")
    before = config.get_config_copy() if config is not None else None
    yield
    config = sys.modules.get("torch._dynamo.config")
    if config is None:
        return
    hidden = _hidden(config)
    if not hidden and (before is None or config.get_config_copy() == before):
        return
    for name in hidden:
        setattr(config, name, config._config[name].default)
    if before is not None:
        config.load_config(before)
    sys.modules["torch._dynamo"].reset()


@pytest.fixture
def fresh_flax_programs() -> Iterator[None]:
    """No jitted Flax program outlives the test (for tests that patch a module the Flax runner has traced)."""
    from tests._fw import clear_flax_programs

    clear_flax_programs()
    yield
    clear_flax_programs()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A row in a framework's other mode (torch.compile, to_static, Flax op by op) is slow: it compiles or traces
    what the default mode runs directly, so the fast tier keeps each framework's default mode only. A test on the
    benchmarks' quick run (the ``quick_run`` fixture) is slow too: it waits for a benchmark in a subprocess."""
    from attn_core.frameworks import FRAMEWORK_INFO

    for item in items:
        if "quick_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
        params = item.callspec.params if hasattr(item, "callspec") else {}
        fw = next((params[k] for k in ("fw", "backend_name", "backend") if k in params), None)
        mode = params.get("mode")
        if isinstance(fw, str) and fw in FRAMEWORK_INFO and mode in FRAMEWORK_INFO[fw].mode_labels \
                and mode != FRAMEWORK_INFO[fw].default_mode:
            item.add_marker(pytest.mark.slow)
