"""One settings object for every `THRIFTY_*` variable and the optional settings file.

Precedence, highest first: an explicit argument (a CLI flag), the environment, the TOML file
(`$THRIFTY_CONFIG`, else `$THRIFTY_HOME/config.toml`, else `~/.thrifty/config.toml`), built-in
defaults. `Settings.load()` is called once at the edge (the CLI, a server's start, a benchmark) and
the value is passed down; no other module reads the environment for these.

The file holds the same names in lower case without the prefix:

    db_url = "postgresql+psycopg://thrifty@127.0.0.1/thrifty"
    server = "http://127.0.0.1:8470"
    data = "/srv/thrifty/shared/data"
    gpu_kind = "a100"
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from thrifty.contract import Env
from thrifty.errors import ThriftyError

DEFAULT_SERVER = "http://127.0.0.1:8470"
_FILE_KEYS = {"home", "db_url", "server", "token", "data", "gpu_kind"}


def _find_data() -> Path | None:
    """The measured data folder `shared/data`, beside the checkout or the working directory."""
    here = Path(__file__).resolve()
    for base in (Path.cwd(), *Path.cwd().parents, *here.parents):
        for candidate in (base / "shared" / "data", base.parent / "shared" / "data"):
            if (candidate / "pollux").is_dir():
                return candidate
    return None


def _read_file(path: Path, required: bool) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        if required:
            raise ThriftyError(
                f"settings file {path} does not exist: create it or unset {Env.CONFIG}"
            ) from None
        return {}
    except OSError as err:
        raise ThriftyError(f"cannot read settings file {path}: {err}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ThriftyError(f"settings file {path}: not valid TOML ({err})") from None
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise ThriftyError(
            f"settings file {path}: unknown setting {unknown[0]!r} "
            f"(known: {', '.join(sorted(_FILE_KEYS))})"
        )
    for key, value in data.items():
        if not isinstance(value, str) or not value:
            raise ThriftyError(f"settings file {path}: field '{key}' must be a non-empty string")
    return data


@dataclass(frozen=True)
class Settings:
    """Where thrifty keeps its state and whom it talks to.

    `home`: the server's folder (database, token, logs, checkpoints). `db_url`: the job store's
    SQLAlchemy URL (None: SQLite in `home`). `server`: the API's URL, for the CLI. `token`: the
    CLI's API token (None: the token file in `home`). `data_root`: the measured-data folder.
    `gpu_kind`: the GPU kind the local executor offers (None: `gpu`, or `cpu` without GPUs).
    """

    home: Path = Path.home() / ".thrifty"
    db_url: str | None = None
    server: str = DEFAULT_SERVER
    token: str | None = None
    data_root: Path | None = None
    gpu_kind: str | None = None

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the environment and the settings file (see the module's docstring)."""
        env = os.environ if environ is None else environ
        home_env = env.get(Env.HOME)
        config = env.get(Env.CONFIG)
        home_guess = Path(home_env) if home_env else Path.home() / ".thrifty"
        path = Path(config) if config else home_guess / "config.toml"
        file = _read_file(path, required=bool(config))

        def pick(name: str, key: str) -> str | None:
            return env.get(name) or file.get(key) or None

        home = pick(Env.HOME, "home")
        data = pick(Env.DATA, "data")
        return cls(
            home=Path(home).expanduser() if home else Path.home() / ".thrifty",
            db_url=pick(Env.DB_URL, "db_url"),
            server=pick(Env.SERVER, "server") or DEFAULT_SERVER,
            token=(pick(Env.TOKEN, "token") or "").strip() or None,
            data_root=Path(data).expanduser() if data else _find_data(),
            gpu_kind=pick(Env.GPU_KIND, "gpu_kind"),
        )

    @classmethod
    def from_env(cls) -> Settings:
        return cls.load()

    def with_data(self, data: Path | None) -> Settings:
        """These settings with `--data` applied, when given."""
        return self if data is None else replace(self, data_root=data)

    def require_data(self) -> Path:
        if self.data_root is None or not (self.data_root / "pollux").is_dir():
            raise ThriftyError(
                f"measured profiles not found: set {Env.DATA} (or --data) to the folder holding "
                "pollux/ and sia/ profiles"
            )
        return self.data_root

    @property
    def token_file(self) -> Path:
        """Where `thrifty server` leaves the first admin's token, and where the CLI looks."""
        return self.home / "token"

    def database_url(self) -> str:
        """`db_url`, else SQLite in `home` (created on first use)."""
        if self.db_url:
            return self.db_url
        self.home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.home / 'thrifty.db'}"
