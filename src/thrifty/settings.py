"""One settings object: environment variables `THRIFTY_*` over built-in defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from thrifty.errors import ThriftyError


def _find_data() -> Path | None:
    """The measured data folder `shared/data`, beside the checkout or the working directory."""
    here = Path(__file__).resolve()
    for base in (Path.cwd(), *Path.cwd().parents, *here.parents):
        candidate = base / "shared" / "data"
        if (candidate / "pollux").is_dir():
            return candidate
        candidate = base.parent / "shared" / "data"
        if (candidate / "pollux").is_dir():
            return candidate
    return None


@dataclass(frozen=True)
class Settings:
    data_root: Path | None

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ.get("THRIFTY_DATA")
        return cls(data_root=Path(env) if env else _find_data())

    def require_data(self) -> Path:
        if self.data_root is None or not (self.data_root / "pollux").is_dir():
            raise ThriftyError(
                "measured profiles not found: set THRIFTY_DATA (or --data) to the folder holding "
                "pollux/ and sia/ profiles"
            )
        return self.data_root
