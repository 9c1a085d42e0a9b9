"""Progress bars: nested bars share one display; quiet mode silences persyn and libraries,
whose bars and logs are off unless verbose."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator

import pytest
from rich.console import Console

from persyn import progress


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    out = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=out, force_terminal=True, width=120))
    quiet = progress.is_quiet()
    progress.set_quiet(False)
    yield out
    progress.set_quiet(quiet)


def test_nested_and_threaded_bars_share_one_display(screen: io.StringIO) -> None:
    # A backend's bar inside an executor's bar, advanced from worker threads (HTTP, Ray).
    with progress.bar("generate teacher", 2) as outer:
        with progress.bar("requests", 40) as inner:
            workers = [
                threading.Thread(target=lambda: [inner.advance() for _ in range(10)])
                for _ in range(4)
            ]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
        outer.advance(2)
    text = screen.getvalue()
    assert "generate teacher" in text and "2/2" in text
    assert "requests" in text and "40/40" in text
    assert "/s" in text and "ETA" in text


def test_quiet_bars_and_logs_print_nothing(screen: io.StringIO) -> None:
    progress.set_quiet(True)
    with progress.bar("generate", 5) as b:
        b.advance(5)
    progress.log("a log line")
    assert screen.getvalue() == ""


def test_library_bars_are_quiet_unless_verbose(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    import transformers

    for key in ("TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(key, raising=False)
    was_quiet, was_verbose = progress.is_quiet(), progress.is_verbose()
    try:
        progress.set_quiet(False)
        progress.set_verbose(False)  # the default: persyn's bars, not the libraries'
        assert os.environ["TQDM_DISABLE"] == "1"  # read by tqdm when first imported
        assert not transformers.utils.logging.is_progress_bar_enabled()
        assert not datasets.is_progress_bar_enabled()
        assert "PERSYN_QUIET" not in progress.quiet_env()
        assert progress.quiet_env()["TQDM_DISABLE"] == "1"  # worker processes alike

        progress.set_verbose(True)
        assert "TQDM_DISABLE" not in os.environ
        # (datasets reads its variable once, when imported: test_cli_calm checks a fresh
        # process)
        assert transformers.utils.logging.is_progress_bar_enabled()
        assert progress.quiet_env() == {"PERSYN_VERBOSE": "1"}

        progress.set_quiet(True)  # quiet wins: nothing at all
        assert os.environ["TQDM_DISABLE"] == "1"
        assert progress.quiet_env()["PERSYN_QUIET"] == "1"
        assert not datasets.is_progress_bar_enabled()
    finally:
        progress.set_quiet(was_quiet)
        progress.set_verbose(was_verbose)
