"""User text is shown as text: rich markup in a reason, a tag or an error never breaks a view
(issue 10, defect 8: `registry history` and `show` exited 1 with MarkupError)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, _env
from tests.test_registry_cli import _cli, _ok, store  # noqa: F401  (store is a fixture)

MARKUP = "per ticket [/ops/1234] and [bold red]loud[/]"


def test_registry_views_show_markup_in_reasons_and_tags_as_typed(store: Path) -> None:  # noqa: F811
    _ok(store, "promote", "1.0", "--reason", MARKUP)
    _ok(store, "tag", "1.0", "[/x]")
    for args in (("history",), ("show", "1.0"), ("show", "champion"), ("list",)):
        proc = _cli(store, *args)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "MarkupError" not in proc.stderr
        flat = " ".join(proc.stdout.split())  # a table may wrap a long reason
        if args[0] != "list":
            assert "per ticket [/ops/1234] and [bold red]loud[/]" in flat, (args, proc.stdout)
        if args[0] != "history":  # the alias log has no tags column
            assert "[/x]" in flat, (args, proc.stdout)


def test_launch_and_status_show_paths_and_errors_with_brackets_as_typed(tmp_path: Path) -> None:
    root = tmp_path / "team [/ops] [red]x"  # run_root and store under a bracketed folder
    launch = subprocess.run(
        [sys.executable, "-m", "cl_hpc.launch", "hydra.searchpath=[file://tests/conf]", f"run_root='{root}/runs'",
         f"store.root='{root}/store'", "cluster=inprocess", "pipeline=diamond",
         "pipeline.tasks.b.target=tests.tasks.fail",
         "~pipeline.tasks.b.params.offset", "~pipeline.tasks.b.params.sleep_s",
         "+pipeline.tasks.b.params.message='[/boom] [red]x'"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=_env())
    output = launch.stdout + launch.stderr
    assert launch.returncode == 1 and "MarkupError" not in output, output
    assert "[/boom] [red]x" in output and "team [/ops] [red]x" in output, output
    status = subprocess.run([sys.executable, "-m", "cl_hpc.status", "--run-root", str(root / "runs")], cwd=REPO,
                            capture_output=True, text=True, timeout=120, env=_env())
    assert "MarkupError" not in status.stderr, status.stderr
    assert "[/boom] [red]x" in status.stdout, status.stdout
