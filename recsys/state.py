"""Where a served database's own files live: everything beside it is named after it.

The lock, the ledger, the staging folder, the archives, the run logs and the run reports
belong to one database, never to the folder, so two databases side by side share nothing:
`recs.duckdb` has `recs.lock`, `recs.runs.jsonl`, `.recs.staging/`, `recs.archive/`,
`recs.logs/` and `recs.report-<run_id>.html`. Only the standard library here: the lock
check runs before torch is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StatePaths:
    served: Path  # resolved

    @property
    def name(self) -> str:
        return self.served.stem

    @property
    def folder(self) -> Path:
        return self.served.parent

    @property
    def lock(self) -> Path:
        return self.folder / f"{self.name}.lock"

    @property
    def ledger(self) -> Path:
        return self.folder / f"{self.name}.runs.jsonl"

    @property
    def staging(self) -> Path:
        return self.folder / f".{self.name}.staging"

    @property
    def archive(self) -> Path:
        return self.folder / f"{self.name}.archive"

    @property
    def logs(self) -> Path:
        return self.folder / f"{self.name}.logs"

    @property
    def legacy_archive(self) -> Path:
        """Where versions before per-database state archived every database of the folder."""
        return self.folder / "archive"

    def archived(self, run_id: str) -> Path:
        return self.archive / f"{run_id}.duckdb"

    def report(self, folder: Path, run_id: str) -> Path:
        return folder / f"{self.name}.report-{run_id}.html"

    def latest_report(self, folder: Path) -> Path:
        return folder / f"{self.name}.report-latest.html"

    def reports(self, folder: Path) -> list[Path]:
        """This database's run reports in `folder`, oldest run first (not the latest link)."""
        latest = self.latest_report(folder)
        return sorted(p for p in folder.glob(f"{self.name}.report-*.html") if p != latest)


def state_paths(database: str | Path) -> StatePaths:
    return StatePaths(Path(database).resolve())
