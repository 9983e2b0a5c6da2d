"""A throwaway Postgres cluster from Debian's packages: initdb + pg_ctl on a loopback port.

Postgres refuses to run as root, so when we are root its commands run as the `postgres`
system user that Debian's package creates, on a data directory owned by that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from drover_localcluster.errors import LocalClusterError, StartupError

DATABASE = "drover"
SUPERUSER = "postgres"


def _bindir() -> Path:
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise LocalClusterError(
        "Postgres server binaries not found. Install Debian's server package: "
        "`sudo apt-get install -y postgresql` (make bootstrap does this)."
    )


def _as_owner(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise LocalClusterError(
            "running as root but there is no `postgres` user to run Postgres as; "
            "install Debian's postgresql package, which creates it"
        ) from exc
    return ["runuser", "-u", "postgres", "--", *args]


@dataclass
class Postgres:
    """One Postgres cluster in `directory`, listening on 127.0.0.1:`port`."""

    directory: Path
    port: int

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def admin_dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(_as_owner(args), capture_output=True, text=True, cwd="/", check=False)

    def _chown(self) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            for path in [self.directory, *self.directory.rglob("*")]:
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def init(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self._chown()
        proc = self._run(
            [
                str(_bindir() / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ]
        )
        if proc.returncode != 0:
            raise StartupError(f"initdb failed: {proc.stdout}{proc.stderr}")

    def start(self, marker: str, *, durable: bool = False) -> None:
        """Start (or keep running) and create the `drover` database. Not `durable`
        (throwaway data, tests): fsync and synchronous commits off, for speed."""
        self.init()
        if not self.running():
            fast = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            options = (
                f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                f"{'' if durable else fast}-c max_connections=200"
            )
            env_prefix = ["env", f"DROVER_LOCALCLUSTER_ID={marker}"]
            proc = self._run(
                [
                    *env_prefix,
                    str(_bindir() / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            )
            if proc.returncode != 0:
                tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
                raise StartupError(f"Postgres did not start: {proc.stdout}{proc.stderr}\n{tail}")
        self._create_database()

    def _create_database(self) -> None:
        psql = [
            str(_bindir().parent / "bin" / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
            "-tAc",
        ]
        exists = self._run([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"])
        if exists.stdout.strip() != "1":
            created = self._run([*psql, f"CREATE DATABASE {DATABASE}"])
            if created.returncode != 0:
                raise StartupError(f"could not create database: {created.stderr}")

    def running(self) -> bool:
        if not self.data.exists():
            return False
        return (
            self._run([str(_bindir() / "pg_ctl"), "-D", str(self.data), "status"]).returncode == 0
        )

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self._run([str(_bindir() / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def restart(self, marker: str) -> None:
        """Stop and start again on the same port: for tests of surviving a database restart."""
        self.stop()
        self.start(marker)
