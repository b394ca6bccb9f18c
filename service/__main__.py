"""`python -m service`: serve the models in --models-dir over HTTP.

Every option is a field of `service.settings.Settings`, documented there once: the command line
is generated from it (pydantic-settings), and each option also comes from the environment with
the prefix RNNSERVE_ (for example RNNSERVE_PORT=9000); the command line wins. See
`python -m service --help`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import CliApp, CliSettingsSource

from service.settings import Settings


def parse(argv: list[str] | None) -> Settings:
    """Settings from the environment and `argv` (default: sys.argv[1:]); a bad value is a usage error (exit 2)."""
    cli = CliSettingsSource(
        Settings,
        cli_prog_name="python -m service",
        cli_kebab_case=True,
        cli_hide_none_type=True,
        cli_exit_on_error=True,
    )
    try:
        return CliApp.run(Settings, cli_args=sys.argv[1:] if argv is None else argv, cli_settings_source=cli)
    except ValidationError as e:
        cli.root_parser.error(str(e))
        raise


def prepare_process() -> Path:
    """A per-run state folder, and prometheus multiprocess mode for this process and every child
    (it must be set before prometheus_client is first imported)."""
    state = Path(tempfile.mkdtemp(prefix="rnnserve-"))
    (state / "prometheus").mkdir()
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(state / "prometheus")
    return state / "workers"


def main(argv: list[str] | None = None) -> int:
    settings = parse(argv)
    state = prepare_process()
    from service.http.app import run  # only now: it imports prometheus_client (see prepare_process)

    try:
        return run(settings, state)
    finally:
        shutil.rmtree(Path(state).parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
