"""Gatehouse load benchmark: the orchestration behind `bench/run` (Python 3.11, standard
library only).

    bench/run [sqlite|postgres|mysql] [--quick] [--smoke] [--only standard|production|factors]

Builds the release binary (and the load generator examples/bench_factors.rs), installs wrk
(and nginx, for figure 11) if missing, starts the server on a free 127.0.0.1
port against a fresh database, seeds users, drives it with wrk and prints markdown tables,
which it also writes into bench/RESULTS.md (one section per backend and scenario set).
Every ratio's reference is measured in the same run.

Two scenario sets:
- standard: the figures RESULTS.md has always had (hash and stack ceilings, login
  throughput, session checks, isolation, cheap failures, memory, growth, import), the
  second-factor logins (figure 10: password + TOTP and passkey logins against password
  logins, all three driven by examples/bench_factors.rs, which computes a TOTP code or
  signs a WebAuthn assertion for each login), and forward authentication (figure 11:
  GET /auth/verify with live sessions against the stack ceiling, and what nginx
  `auth_request` to it adds to the median request of a small app behind an nginx the run
  starts itself). Rate limits are raised out of the way for the throughput figures.
  `--only factors` runs figure 10 alone: it prints its rows and judges them, and leaves
  RESULTS.md alone (its table is the standard one).
- production: the configuration people run. Default rate limits, clients behind a trusted
  proxy (TRUSTED_PROXIES=127.0.0.1/32) arriving from many addresses (X-Forwarded-For),
  many accounts each with a live session and a live code, the Redis limiter on PostgreSQL
  and MariaDB/MySQL. Records what each request costs: server CPU, database CPU, database
  round trips, Redis commands. These feed the README's sizing guide.

--quick skips the 1,000,000-user growth figure (the slow part). --smoke runs everything at
toy scale (a few hundred accounts, two or three seconds a phase) to prove the harness
works; its figures mean nothing, so it judges no target and writes nothing to RESULTS.md.

Everything goes to 127.0.0.1 only (X-Forwarded-For addresses are only header text); every
load is bounded in time (wrk -d, plus an outer timeout) and every loop in count. The
script stops only the processes it started, by their handle, and drops only the databases
it created.

Exit status: 0 every target met; 1 the harness failed; 2 usage; 3 a target was missed.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
USAGE = "usage: bench/run [sqlite|postgres|mysql] [--quick] [--smoke] [--only standard|production|factors]"

EXIT_FAILED, EXIT_USAGE, EXIT_MISSED = 1, 2, 3

PASSWORD = "bench horse battery staple"
# A valid argon2id PHC string for SQL-seeded filler users (password "filler password 1"),
# computed once with m=8 KiB, t=1 so that nothing about it is expensive. Filler users are
# never logged in; they only make the tables and indexes big.
FILLER_HASH = "$argon2id$v=19$m=8,t=1,p=1$ze70FmwM1caIHBO0bUFBUA$BSVRqsPciPFSum7pwO2eJVL+W2HWTvaDMeGlsUIwaQo"
# Rate limits raised for the standard throughput figures. GCRA works in whole milliseconds
# (one event per max(period/count, 1) ms), so a "huge count per minute" rule still caps a
# key at 1,000/s after a 60,000-event burst; a long period keeps the burst out of reach.
RAISED_RULE = "100000000/1000h"
# A valid bcrypt hash (cost 4, password "seed password 1") for the old server's users table
# that `gatehouse import-seed` reads; import wraps it in argon2id at the run's parameters.
SEED_BCRYPT = "$2b$04$YzOU3iQIE4f19Xcp3bqgWOG.xmyxEf4GUUh4Stgi/wtXOr96aZkna"


@dataclass(frozen=True)
class Scale:
    """Counts and durations (seconds) of one run."""

    users: int = 200  # accounts registered through the API (login pool, /me tokens)
    otp_users: int = 100  # of those, how many ask for a code before the /validate-otp flood
    filler_small: int = 800  # SQL-seeded rows that bring the table to 1,000 users
    big_total: int = 1_000_000  # users in the table for the second growth measurement
    d_short: int = 10  # wrk duration of most figures
    d_long: int = 15  # login throughput, isolation and memory floods
    d_growth: int = 8  # each growth measurement (after a 2 s warm-up)
    d_warm: int = 2
    threads: int = 2  # wrk threads (the machine's cores are shared with the server)
    import_users: int = 2000  # seed users for import-seed (one argon2id each)
    hash_rounds: int = 100
    after_flood: int = 10  # wait before the "RSS after the flood" reading
    quiet_wait: int = 60  # bounded wait for a quiet machine before the run
    phase_quiet: int = 15  # bounded wait for quiet before each phase
    # production-load scenarios
    prod_accounts: int = 10_000  # accounts, each with a live session and a live code
    prod_addresses: int = 10_000  # distinct client addresses in X-Forwarded-For
    d_prod: int = 15
    # second-factor logins (figure 10)
    factor_conns: int = 32  # concurrent logins, as figure 2
    factor_plain: int = 100  # password-only accounts for the reference
    factor_totp_min: int = 200  # TOTP accounts at least (more as the password rate asks)
    factor_totp_max: int = 4000  # and at most (each costs two argon2id hashes to seed)
    # PostgreSQL publishes a backend's statistics at most every 10 s when it goes idle
    # (PGSTAT_IDLE_INTERVAL), so its counters are read that long after a phase's load.
    pg_stats_settle: float = 11.0


SMOKE = Scale(
    users=40,
    otp_users=20,
    filler_small=100,
    big_total=2000,
    d_short=2,
    d_long=3,
    d_growth=2,
    d_warm=1,
    import_users=200,
    hash_rounds=10,
    after_flood=2,
    quiet_wait=0,
    phase_quiet=0,
    prod_accounts=200,
    prod_addresses=200,
    d_prod=3,
    factor_conns=8,
    factor_plain=16,
    factor_totp_min=16,
    factor_totp_max=64,
)


class Failed(Exception):
    """The harness could not measure (as opposed to a figure missing its target)."""


def log(msg: str) -> None:
    print(f"\n== {msg}", file=sys.stderr, flush=True)


def note(msg: str) -> None:
    print(f"   {msg}", file=sys.stderr, flush=True)


def fmt(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


# ---------------------------------------------------------------- prerequisites


# Where administrators' tools live (nginx is /usr/sbin/nginx); not every PATH has them.
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


class Prereqs:
    apt_updated = False

    @staticmethod
    def which(command: str) -> str | None:
        return shutil.which(command) or shutil.which(command, path=os.pathsep.join(SBIN_DIRS))

    @staticmethod
    def as_root(cmd: list[str]) -> list[str]:
        return cmd if os.geteuid() == 0 else ["sudo", *cmd]

    @classmethod
    def apt_install(cls, package: str) -> None:
        if not shutil.which("apt-get"):
            raise Failed(f"need {package} but apt-get is not available; install it by hand")
        if not cls.apt_updated:
            subprocess.run(cls.as_root(["apt-get", "update", "-qq"]), stdout=subprocess.DEVNULL, check=False)
            cls.apt_updated = True
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(
            cls.as_root(["apt-get", "install", "-y", "-qq", package]), stdout=subprocess.DEVNULL, env=env, check=False
        )

    @classmethod
    def need(cls, command: str, package: str) -> str:
        """The path of `command` (on PATH or in an sbin directory), installing `package`
        for it first if it is missing."""
        found = cls.which(command)
        if found:
            return found
        note(f"installing {package} (for {command})")
        cls.apt_install(package)
        found = cls.which(command)
        if not found:
            raise Failed(f"{command} is still missing after installing {package}")
        return found


# ---------------------------------------------------------------- /proc readings


CLK = os.sysconf("SC_CLK_TCK")


def machine_busy() -> int:
    """Busy ticks of the whole machine (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu "):
                v = [int(x) for x in line.split()[1:]]
                return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return 0


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: index 11, 12 = utime, stime; 13, 14 = the
    reaped children's."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def pid_cpu(pid: int | None) -> int:
    f = stat_fields(pid) if pid else None
    return int(f[11]) + int(f[12]) if f else 0


def proc_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def mib(kb: int) -> str:
    return fmt(kb / 1024, 1)


def pids_named(names: set[str]) -> list[int]:
    """Processes whose name (comm, as `pgrep -x` matches) is one of `names`. Only read."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() in names:
                    found.append(int(entry))
            except OSError:
                pass
    return found


def db_cpu_snapshot(names: set[str]) -> dict[str, int]:
    """Ticks of each database server process, plus "reaped": the CPU of the children
    its processes have reaped. A PostgreSQL backend whose client went away mid-phase (wrk's
    end cancels requests) is gone before the phase ends; its CPU is found there."""
    snap: dict[str, int] = {"reaped": 0}
    for pid in pids_named(names) if names else []:
        f = stat_fields(pid)
        if f:
            snap[str(pid)] = int(f[11]) + int(f[12])
            snap["reaped"] += int(f[13]) + int(f[14])
    return snap


def db_cpu_delta(before: dict[str, int], after: dict[str, int]) -> int:
    """Live processes: their growth (all of it for new ones). Gone ones were reaped: the
    growth of "reaped" holds their whole lives, so what they had used before comes off."""
    t = 0
    for p, v in after.items():
        if p != "reaped":
            t += max(v - before.get(p, 0), 0)
    t += after["reaped"] - before["reaped"]
    for p, v in before.items():
        if p != "reaped" and p not in after:
            t -= v
    return max(t, 0)


def children_cpu() -> float:
    """Seconds of CPU of this script's waited-for children (wrk, curl, hash-bench...)."""
    t = os.times()
    return t.children_user + t.children_system


# ---------------------------------------------------------------- wrk output


@dataclass
class WrkResult:
    text: str

    def _search(self, pattern: str) -> re.Match[str] | None:
        return re.search(pattern, self.text, re.M)

    @property
    def rps(self) -> int:
        m = self._search(r"^Requests/sec:\s+([0-9.]+)")
        return round(float(m.group(1))) if m else 0

    @property
    def total(self) -> int:
        m = self._search(r"^\s*(\d+) requests in ")
        return int(m.group(1)) if m else 0

    @property
    def non2xx(self) -> int:
        m = self._search(r"Non-2xx or 3xx responses:\s+(\d+)")
        return int(m.group(1)) if m else 0

    @property
    def sockerr(self) -> int:
        m = self._search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
        return sum(int(g) for g in m.groups()) if m else 0

    @property
    def statuses(self) -> dict[int, int]:
        m = self._search(r"^statuses:(.*)$")
        if not m:
            return {}
        return {int(k): int(v) for k, v in (p.split("=") for p in m.group(1).split())}

    def pct(self, p: int) -> float:
        m = re.search(rf"Latency Distribution.*?^\s+{p}%\s+([0-9.]+)([a-z]+)", self.text, re.M | re.S)
        if not m:
            return float("nan")
        v, unit = float(m.group(1)), m.group(2)
        return v * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}.get(unit, 1.0)

    def p(self, q: int) -> str:
        return fmt(self.pct(q))

    def errs(self) -> str:
        return f"non-2xx {self.non2xx}/{self.total}"

    def summary(self, name: str) -> str:
        extra = f", statuses {self.statuses}" if self.statuses else ""
        return (
            f"{name}: {self.rps} req/s, p50 {self.p(50)} ms, p99 {self.p(99)} ms, "
            f"non-2xx {self.non2xx}/{self.total}, socket errors {self.sockerr}{extra}"
        )


# ---------------------------------------------------------------- databases


class Database:
    """One database this run created, and SQL against it through the backend's client
    (sqlite3 module; psql; mysql), rows back as lists of strings."""

    def __init__(self, backend: str, name: str, work: Path):
        self.backend, self.name = backend, name
        self.path = work / f"{name}.db"
        if backend == "sqlite":
            self.url = f"sqlite://{self.path}"
        elif backend == "postgres":
            self.url = f"postgres://postgres@127.0.0.1:5432/{name}"
        else:
            self.url = f"mysql://root@127.0.0.1:3306/{name}"

    def create(self) -> None:
        if self.backend == "postgres":
            admin_sql("postgres", f"CREATE DATABASE {self.name}")
        elif self.backend == "mysql":
            admin_sql("mysql", f"CREATE DATABASE {self.name} CHARACTER SET utf8mb4")

    def drop(self) -> None:
        try:
            if self.backend == "postgres":
                admin_sql("postgres", f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
            elif self.backend == "mysql":
                admin_sql("mysql", f"DROP DATABASE IF EXISTS {self.name}")
        except Failed:
            print(f"bench/run: could not drop database {self.name}", file=sys.stderr)

    def sql(self, script: str) -> list[list[str]]:
        if self.backend == "sqlite":
            con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            try:
                rows: list[list[str]] = []
                for stmt in split_sql(script):
                    rows = [[str(c) for c in r] for r in con.execute(stmt).fetchall()] or rows
                return rows
            finally:
                con.close()
        if self.backend == "postgres":
            cmd = ["psql", "-q", "-X", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", self.name]
        else:
            cmd = ["mysql", "-N", "-B", "-h", "127.0.0.1", "-u", "root", self.name]
        return run_sql_client(cmd, script)

    def scalar(self, query: str) -> str:
        rows = self.sql(query)
        return rows[-1][0] if rows and rows[-1] else ""


def split_sql(script: str) -> list[str]:
    # Only our own scripts go through here: no semicolons inside literals.
    return [s.strip() for s in script.split(";") if s.strip()]


def run_sql_client(cmd: list[str], script: str) -> list[list[str]]:
    p = subprocess.run(cmd, input=script, capture_output=True, text=True, timeout=1800, check=False)
    if p.returncode != 0:
        raise Failed(f"{cmd[0]} failed: {p.stderr.strip()[:400]}")
    return [line.split("\t") for line in p.stdout.splitlines() if line != ""]


def admin_sql(backend: str, script: str) -> list[list[str]]:
    if backend == "postgres":
        cmd = ["psql", "-q", "-X", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"]
    else:
        cmd = ["mysql", "-N", "-B", "-h", "127.0.0.1", "-u", "root"]
    return run_sql_client(cmd, script)


def mysql_recursion(depth: int) -> str:
    version = admin_sql("mysql", "select version()")[0][0]
    if "mariadb" in version.lower():
        return f"SET SESSION max_recursive_iterations = {depth + 10};"
    return f"SET SESSION cte_max_recursion_depth = {depth + 10};"


USER_COLS = "username, username_norm, email, email_norm, phone, password_hash, created_at, updated_at"


def seed_users_sql(db: Database, prefix: str, first: int, last: int, password_hash: str) -> None:
    """Inserts users PREFIX<first>..PREFIX<last> (inclusive) straight into the users table,
    all with the same password hash, then refreshes the planner's statistics of that table
    (only that one, on every backend: a whole-database ANALYZE on SQLite also recorded the
    size other tables had at that moment, such as one code in otp_codes, and the planner
    then scanned otp_codes for every lookup once it held 10,000)."""
    now = int(time.time())
    if db.backend == "mysql":
        vals = (
            f"CONCAT('{prefix}', n), CONCAT('{prefix}', n), CONCAT('{prefix}', n, '@bench.invalid'), "
            f"CONCAT('{prefix}', n, '@bench.invalid'), NULL, '{password_hash}', {now}, {now}"
        )
    else:
        vals = (
            f"'{prefix}' || n, '{prefix}' || n, '{prefix}' || n || '@bench.invalid', "
            f"'{prefix}' || n || '@bench.invalid', NULL, '{password_hash}', {now}, {now}"
        )
    if db.backend == "sqlite":
        db.sql(
            f"BEGIN; INSERT INTO users ({USER_COLS}) "
            f"WITH RECURSIVE s(n) AS (SELECT {first} UNION ALL SELECT n + 1 FROM s WHERE n < {last}) "
            f"SELECT {vals} FROM s; COMMIT; ANALYZE users;"
        )
    elif db.backend == "postgres":
        db.sql(
            f"INSERT INTO users ({USER_COLS}) SELECT {vals} FROM generate_series({first}, {last}) AS s(n);\nANALYZE users;"
        )
    else:
        db.sql(
            f"{mysql_recursion(last - first)}\nINSERT INTO users ({USER_COLS}) "
            f"WITH RECURSIVE s(n) AS (SELECT {first} UNION ALL SELECT n + 1 FROM s WHERE n < {last}) "
            f"SELECT {vals} FROM s;\nANALYZE TABLE users;"
        )


# ---------------------------------------------------------------- HTTP (seeding only)


class Client:
    """Keep-alive HTTP/1.1 to the server, one connection per calling thread. Used to seed
    and probe; the figures themselves come from wrk."""

    def __init__(self, port: int):
        self.port = port
        self.local = threading.local()

    def request(self, method: str, path: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, http.client.HTTPResponse, bytes]:
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        for attempt in range(2):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request(method, path, body=data, headers=hdrs)
                resp = conn.getresponse()
                payload = resp.read()
                return resp.status, resp, payload
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                if attempt == 1:
                    raise
        raise Failed("unreachable")

    def many(self, jobs: list, fn, parallel: int = 8) -> list:
        """fn(job) for every job, `parallel` at once, results in order."""
        with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
            return list(pool.map(fn, jobs))


def session_cookie(resp: http.client.HTTPResponse) -> str | None:
    for value in resp.headers.get_all("Set-Cookie") or []:
        m = re.match(r"session=([^;]*);", value)
        if m:
            return m.group(1)
    return None


def client_address(i: int) -> str:
    """The i-th (0-based) of the made-up client addresses: 10.0.0.1, 10.0.0.2, ... Only ever
    header text in X-Forwarded-For; nothing is sent to them."""
    n = i + 1
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


# ---------------------------------------------------------------- the run


@dataclass
class Phase:
    name: str
    seconds: float
    server: float
    db: float | None
    gen: float
    other: float
    threads: str


@dataclass
class Run:
    backend: str
    quick: bool
    smoke: bool
    scenarios: set[str]
    scale: Scale
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gatehouse-bench.", dir=os.environ.get("TMPDIR"))))
    procs: list[subprocess.Popen] = field(default_factory=list)
    dbs: list[Database] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    server: subprocess.Popen | None = None
    port: int = 0
    db_proc_names: set[str] = field(default_factory=set)
    # Long-running helpers this run started (figure 11's nginx): their CPU goes with this
    # script's children (the load generator's column), not with "other processes".
    helpers: list[subprocess.Popen] = field(default_factory=list)

    # ------------------------------------------------------------ processes

    def spawn(self, cmd: list[str], out: Path, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
        with open(out, "wb") as f:
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen, grace: float = 10.0) -> None:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def cleanup(self, failed: bool) -> None:
        for p in list(self.procs):
            self.stop(p, 5.0)
        for db in self.dbs:
            db.drop()
        if failed or os.environ.get("BENCH_KEEP") == "1":
            print(f"bench/run: logs and wrk output kept in {self.work}", file=sys.stderr)
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    # ------------------------------------------------------------ setup

    def prerequisites(self) -> None:
        log("prerequisites")
        if not shutil.which("cargo"):
            raise Failed("cargo not found: install the Rust toolchain (https://rustup.rs)")
        Prereqs.need("wrk", "wrk")
        if "standard" in self.scenarios:
            self.nginx = Prereqs.need("nginx", "nginx-light")  # figure 11
        if self.backend == "postgres":
            Prereqs.need("psql", "postgresql-client")
        elif self.backend == "mysql":
            Prereqs.need("mysql", "mariadb-client")
        for limit in (65536, 4096):
            try:
                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard) if hard > 0 else limit, hard))
                break
            except (ValueError, OSError):
                continue

        log("cargo build --release --locked")
        if subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=False).returncode != 0:
            raise Failed("the release build failed")
        target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        if not target.is_absolute():
            target = ROOT / target
        self.bin = target / "release" / "gatehouse"
        if not os.access(self.bin, os.X_OK):
            raise Failed(f"no binary at {self.bin}")
        if self.scenarios & {"standard", "factors"}:
            log("cargo build --release --locked --example bench_factors")
            built = subprocess.run(["cargo", "build", "--release", "--locked", "--example", "bench_factors"], cwd=ROOT, check=False)
            if built.returncode != 0:
                raise Failed("the build of examples/bench_factors.rs failed")
            self.factors_bin = target / "release" / "examples" / "bench_factors"
            if not os.access(self.factors_bin, os.X_OK):
                raise Failed(f"no binary at {self.factors_bin}")

        self.cores = os.cpu_count() or 1
        self.cpu_model = "unknown CPU"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    self.cpu_model = line.split(":", 1)[1].strip()
                    break
        self.date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
        if git.returncode == 0:
            self.commit = git.stdout.strip()
            # Changed or new (untracked) files that go into the binary: a new migration is
            # one of them.
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=all", "--", "src", "migrations", "build.rs", "Cargo.toml", "Cargo.lock"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            )
            if dirty.returncode != 0 or dirty.stdout.strip():
                self.commit += " + uncommitted changes"
        else:
            self.commit = "unknown (not a git checkout)"

        self.rand = secrets.token_hex(4)
        if self.backend == "postgres":
            try:
                admin_sql("postgres", "select 1")
            except (Failed, FileNotFoundError) as e:
                raise Failed("PostgreSQL is not answering on 127.0.0.1:5432 (start it, e.g. bash scripts/services.sh)") from e
            self.db_proc_names = {"postgres"}
        elif self.backend == "mysql":
            try:
                admin_sql("mysql", "select 1")
            except (Failed, FileNotFoundError) as e:
                raise Failed("MariaDB/MySQL is not answering on 127.0.0.1:3306 (start it, e.g. bash scripts/services.sh)") from e
            self.db_proc_names = {"mariadbd", "mysqld"}

        # The server's own argon2id defaults, unless BENCH_ARGON2_* ask for other parameters
        # (to measure them; the table says which ran). hash-bench and every server get them.
        self.argon2_env = {"HASH_CONCURRENCY": "0"}
        for var in ("MEMORY_KIB", "ITERATIONS", "PARALLELISM"):
            if os.environ.get(f"BENCH_ARGON2_{var}"):
                self.argon2_env[f"ARGON2_{var}"] = os.environ[f"BENCH_ARGON2_{var}"]
        help_text = subprocess.run([self.bin, "serve", "--help"], capture_output=True, text=True, check=False).stdout
        self.rate_vars = sorted(set(re.findall(r"env: (RATE_[A-Z_]+)", help_text)))
        if not self.rate_vars:
            raise Failed("found no RATE_* settings in 'gatehouse serve --help'")

    def new_database(self, suffix: str = "") -> Database:
        db = Database(self.backend, f"gh_bench_{self.rand}{suffix}", self.work)
        self.dbs.append(db)
        db.create()
        return db

    # ------------------------------------------------------------ the server

    def base_env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root")}

    def free_port(self) -> int:
        # Bind port 0 and let the kernel choose; released just before the server binds it.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def start_server(self, name: str, db: Database, extra: dict[str, str]) -> None:
        """A clean environment (no inherited DATABASE_URL, SMTP, Redis...), run in the work
        directory so that no .env file is picked up."""
        self.port = self.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Unless the scenario says otherwise, wrk's connections all come from 127.0.0.1:
        # no per-IP connection cap.
        env = {
            **self.base_env(),
            "COOKIE_SECURE": "false",
            "RUST_LOG": "warn",
            "SHUTDOWN_GRACE": "2s",
            "MAX_CONNECTIONS_PER_IP": "0",
            "DATABASE_URL": db.url,
            "LISTEN_ADDR": f"127.0.0.1:{self.port}",
            # The operations listener (metrics) runs as in production, on a port of its own
            # so that it cannot collide with another server on this machine.
            "ADMIN_LISTEN_ADDR": f"127.0.0.1:{self.free_port()}",
            **self.argon2_env,
            **extra,
        }
        self.server_log = self.work / f"server-{name}.log"
        self.server = self.spawn([str(self.bin), "serve"], self.server_log, env=env, cwd=self.work)
        self.client = Client(self.port)
        for _ in range(300):
            try:
                if self.client.request("GET", "/healthz")[0] == 200:
                    note(f"server '{name}' up: pid {self.server.pid} on {self.url}")
                    return
            except OSError:
                pass
            if self.server.poll() is not None:
                print("\n".join(self.server_log.read_text(errors="replace").splitlines()[-20:]), file=sys.stderr)
                raise Failed(f"server '{name}' exited during start")
            time.sleep(0.1)
        raise Failed(f"server '{name}' did not answer /healthz within 30 s")

    def stop_server(self) -> None:
        if self.server:
            self.stop(self.server)
            self.server = None

    @property
    def spid(self) -> int:
        return self.server.pid if self.server else 0

    # ------------------------------------------------------------ CPU accounting
    # The load generator shares the cores with the server, and so does anything else
    # running on the machine. Each measured phase records where the CPU went: the server,
    # the database server, this script's children (wrk, hash-bench...) and everything
    # else (the machine's busy time minus those). A figure taken while "other" is well
    # above zero was measured on a busy machine.

    def helper_cpu(self) -> int:
        return sum(pid_cpu(p.pid) for p in self.helpers if p.poll() is None)

    def await_quiet(self) -> None:
        other = 0.0
        for _ in range(self.scale.phase_quiet):
            b0, s0, d0, h0 = machine_busy(), pid_cpu(self.spid), db_cpu_snapshot(self.db_proc_names), self.helper_cpu()
            time.sleep(1)
            other = (
                (machine_busy() - b0) - (pid_cpu(self.spid) - s0) - db_cpu_delta(d0, db_cpu_snapshot(self.db_proc_names)) - (self.helper_cpu() - h0)
            ) / CLK
            if other <= 0.1:
                return
        if self.scale.phase_quiet:
            note(f"other processes still use {fmt(other)} cores; measuring anyway")

    def phase_begin(self) -> None:
        self.await_quiet()
        self.ph = (time.monotonic(), machine_busy(), pid_cpu(self.spid), db_cpu_snapshot(self.db_proc_names), children_cpu(), self.helper_cpu())

    def phase_end(self, name: str) -> Phase:
        t0, b0, s0, d0, c0, h0 = self.ph
        c1, h1 = children_cpu(), self.helper_cpu()
        el = time.monotonic() - t0
        b1, s1, d1 = machine_busy(), pid_cpu(self.spid), db_cpu_snapshot(self.db_proc_names)
        server = (s1 - s0) / CLK / el
        db = db_cpu_delta(d0, d1) / CLK / el
        gen = (c1 - c0) / el + max(h1 - h0, 0) / CLK / el
        other = max((b1 - b0) / CLK / el - server - db - gen, 0.0)
        threads = proc_kb(self.spid, "Threads") if self.spid else None
        ph = Phase(name, el, server, db if self.db_proc_names else None, gen, other, str(threads) if threads else "?")
        self.phases.append(ph)
        if other >= 0.2:
            note(f"warning: other processes used {fmt(other)} cores during '{name}'; this figure is disturbed")
        return ph

    # ------------------------------------------------------------ wrk

    def wrk_cmd(self, conns: int, threads: int, dur: int, path: str, script: str | None = None, *args: str, base: str | None = None) -> list[str]:
        """wrk against the server, or against `base` (another URL, e.g. figure 11's nginx)."""
        url = (base or self.url) + path
        cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{dur}s", "--timeout", "10s", "--latency"]
        if script:
            cmd += ["-s", str(BENCH_DIR / script), url, "--", *args]
        else:
            cmd.append(url)
        return cmd

    def wrk_bg(
        self, name: str, conns: int, threads: int, dur: int, path: str, script: str | None = None, *args: str, base: str | None = None
    ) -> tuple[subprocess.Popen, str, int]:
        out = self.work / f"{name}.wrk"
        return self.spawn(self.wrk_cmd(conns, threads, dur, path, script, *args, base=base), out), name, dur

    def wrk_wait(self, handle: tuple[subprocess.Popen, str, int]) -> WrkResult:
        p, name, dur = handle
        try:
            rc = p.wait(dur + 30)
        except subprocess.TimeoutExpired:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            rc = -1
        self.procs.remove(p)
        text = (self.work / f"{name}.wrk").read_text(errors="replace")
        if rc != 0:
            print(text, file=sys.stderr)
            raise Failed(f"wrk run '{name}' failed")
        return WrkResult(text)

    def wrk(self, name: str, conns: int, threads: int, dur: int, path: str, script: str | None = None, *args: str, base: str | None = None) -> WrkResult:
        return self.wrk_wait(self.wrk_bg(name, conns, threads, dur, path, script, *args, base=base))

    # ------------------------------------------------------------ the whole run

    def main(self) -> int:
        self.prerequisites()
        self.wait_for_quiet_machine()
        if "standard" in self.scenarios:
            Standard(self).run()
        elif "factors" in self.scenarios:
            rows = Factors(self).run()
            print("\n" + "\n".join(["| # | Figure | Measured | Ratio (reference from this run) | Target | Verdict |", "|---|---|---|---|---|---|", *rows]))
            print("\n" + "\n".join(self.phases_table(self.phases, "bench_factors")) + "\n")
            note("--only factors: RESULTS.md untouched (figure 10 is written with the whole standard set)")
        if "production" in self.scenarios:
            Production(self).run()
        if self.smoke:
            note("--smoke: figures at toy scale on a busy machine; no target judged, RESULTS.md untouched")
            return 0
        if self.missed:
            note("missed: " + "; ".join(self.missed))
            return EXIT_MISSED
        return 0

    def wait_for_quiet_machine(self) -> None:
        """Bounded wait (BENCH_WAIT_QUIET seconds, default 60) for other processes to leave
        the cores alone; the run goes ahead either way and the table says how busy it was."""
        wait = int(os.environ.get("BENCH_WAIT_QUIET", self.scale.quiet_wait))
        busy = 0.0
        for i in range(0, max(wait, 0) + 1, 5):
            b0 = machine_busy()
            time.sleep(2)
            busy = (machine_busy() - b0) / CLK / 2
            if busy <= 0.1 or wait == 0:
                break
            if i == 0:
                note(f"other processes keep {fmt(busy)} cores busy; waiting up to {wait}s for quiet")
            time.sleep(3)
        self.quiet_busy = busy
        note(f"background load before the run: {fmt(busy)} cores busy")

    def header_line(self, hb: dict) -> str:
        own = any(os.environ.get(f"BENCH_ARGON2_{v}") for v in ("MEMORY_KIB", "ITERATIONS", "PARALLELISM"))
        niceness = os.nice(0)
        return (
            f"{self.date} · {self.cores} cores (`nproc`) · {self.cpu_model} · commit {self.commit} · "
            f"wrk ({self.scale.threads} threads) on the same cores as the server · "
            f"argon2id m={hb['m']} KiB, t={hb['t']}, p={hb['p']}"
            + (" (set by BENCH_ARGON2_*, not the defaults)" if own else "")
            + " · RUST_LOG=warn"
            + (f" · run at nice {niceness}" if niceness else "")
            + (" · --quick (growth skipped)" if self.quick else "")
            + (" · --smoke (toy scale: figures mean nothing)" if self.smoke else "")
        )

    def judge(self, label: str, ok: bool) -> str:
        if self.smoke:
            return "met (smoke: not judged)" if ok else "missed (smoke: not judged)"
        if not ok:
            self.missed.append(label)
        return verdict(ok)

    def phases_table(self, rows: list[Phase], gen_label: str) -> list[str]:
        out = [
            f"| Phase | Length | Server | Database server | This script's children ({gen_label}) | Other processes | Server threads at end |",
            "|---|---|---|---|---|---|---|",
        ]
        for ph in rows:
            db = fmt(ph.db) if ph.db is not None else "— (in process)"
            out.append(f"| {ph.name} | {fmt(ph.seconds, 1)} s | {fmt(ph.server)} | {db} | {fmt(ph.gen)} | {fmt(ph.other)} | {ph.threads} |")
        return out

    def write_section(self, marker: str, table: list[str]) -> None:
        text = "\n".join(table) + "\n"
        print("\n" + text)
        if self.smoke:
            return
        # RESULTS.md keeps one section per backend and scenario set; this run replaces its own.
        results = BENCH_DIR / "RESULTS.md"
        if not results.exists():
            results.write_text(
                "# Gatehouse benchmark results\n\n"
                "Written by `bench/run [sqlite|postgres|mysql]`; each run replaces the section of its backend.\n"
                "How each figure is measured: the Benchmarks section of the README, and `bench/run` itself.\n"
            )
        lines = results.read_text().splitlines()
        begin, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
        if begin in lines and end in lines:
            i, j = lines.index(begin), lines.index(end)
            lines[i : j + 1] = text.rstrip("\n").splitlines()
        else:
            lines += ["", *text.rstrip("\n").splitlines()]
        results.write_text("\n".join(lines) + "\n")
        print(f"written to {results}")


# ================================================================ standard figures


class Standard:
    """The figures RESULTS.md has always had; numbered as there. Figure 10 (second factors)
    is the Factors class's; figure 11 (forward authentication: GET /auth/verify against the
    stack ceiling, 11a, and the latency nginx `auth_request` adds in front of a small app,
    11b) is measured right after figure 4, on the same server with the same tokens."""

    def __init__(self, run: Run):
        self.r = run
        self.s = run.scale
        self.w = run.work

    def hash_bench(self, out: Path | None = None) -> subprocess.Popen | str:
        cmd = [str(self.r.bin), "hash-bench", "--rounds", str(self.s.hash_rounds)]
        env = {**self.r.base_env(), **self.r.argon2_env}
        if out:
            return self.r.spawn(cmd, out, env=env, cwd=self.w)
        p = subprocess.run(cmd, env=env, cwd=self.w, capture_output=True, text=True, timeout=600, check=False)
        if p.returncode != 0:
            raise Failed(f"hash-bench failed: {p.stderr.strip()[:400]}")
        return p.stdout.strip()

    def run(self) -> None:
        r, s, w = self.r, self.s, self.w
        db = r.new_database()

        # ---------------------------------------------------- server A: raised limits
        log(f"server A: {r.backend}, every RATE_* raised to {RAISED_RULE}, RESPONSE_FLOOR=0s")
        raised = {v: RAISED_RULE for v in r.rate_vars}
        # The refusal floor holds each refused guess 25 ms by sleeping: it costs no CPU, and
        # would cap figure 6a at 64 connections / 25 ms = 2,560 answers a second whatever a
        # refusal costs. The production-load figures keep it.
        raised["RESPONSE_FLOOR"] = "0s"
        r.start_server("main", db, raised)
        main_pid = r.spid
        time.sleep(2)
        idle_kb = proc_kb(main_pid, "VmRSS") or 0
        idle_threads = proc_kb(main_pid, "Threads") or 0
        note(f"idle RSS {mib(idle_kb)} MiB, {idle_threads} threads")

        log(f"seeding {s.users} users through POST /register")
        users = range(1, s.users + 1)
        (w / "login-bodies.jsonl").write_text("".join(json.dumps({"identifier": f"bench{i}", "password": PASSWORD}) + "\n" for i in users))
        # A fixed guess: wrong unless the code happens to be 000000 (one in a million).
        (w / "otp-bodies.jsonl").write_text(
            "".join(json.dumps({"identifier": f"bench{i}@bench.invalid", "otp": "000000"}) + "\n" for i in range(1, s.otp_users + 1))
        )
        got = r.client.many(
            list(users),
            lambda i: r.client.request("POST", "/register", {"username": f"bench{i}", "email": f"bench{i}@bench.invalid", "password": PASSWORD})[0],
        )
        expect_all(got, 201, "registration")

        log(f"logging in all {s.users} users for session tokens")
        logins = r.client.many(list(users), lambda i: r.client.request("POST", "/login", {"identifier": f"bench{i}", "password": PASSWORD}))
        expect_all([x[0] for x in logins], 200, "seed logins")
        tokens = [session_cookie(x[1]) for x in logins]
        if not all(tokens):
            raise Failed(f"expected {s.users} session tokens")
        (w / "tokens.txt").write_text("".join(t + "\n" for t in tokens if t))
        code = r.client.request("GET", "/me", headers={"Authorization": f"Bearer {tokens[0]}"})[0]
        if code != 200:
            raise Failed(f"GET /me with a fresh token answered {code}")

        log(f"asking codes for {s.otp_users} users through POST /forgot-password")
        forgot = lambda i: r.client.request("POST", "/forgot-password", {"identifier": f"bench{i}@bench.invalid"})[0]  # noqa: E731
        got = r.client.many(list(range(1, s.otp_users + 1)), forgot)
        forgot_anomaly = ""
        if got.count(200) != s.otp_users:
            # Not a benchmark figure, but worth knowing: record it, show the server's
            # complaint, and ask again one request at a time so the figures can be measured.
            counts = count_statuses(got)
            forgot_anomaly = (
                f"{s.otp_users - got.count(200)} of {s.otp_users} POST /forgot-password (8 in parallel, distinct users) did not answer 200: "
                + ", ".join(f"{n} × HTTP {st}" for st, n in sorted(counts.items()) if st != 200)
            )
            note(f"warning: {forgot_anomaly}")
            for line in [ln for ln in r.server_log.read_text(errors="replace").splitlines() if "ERROR" in ln][:3]:
                print(line[:400], file=sys.stderr)
            got = r.client.many(list(range(1, s.otp_users + 1)), forgot, parallel=1)
            expect_all(got, 200, "forgot-password, one at a time")
        note(f"live codes in the database: {db.scalar('SELECT COUNT(*) FROM otp_codes WHERE used_at IS NULL')}")

        # ---------------------------------------------------- 3. stack ceiling
        log(f"3. stack ceiling: GET /healthz, 64 connections, {s.d_short}s")
        r.phase_begin()
        healthz = r.wrk("healthz", 64, s.threads, s.d_short, "/healthz")
        r.phase_end("3 GET /healthz, 64 conns")
        note(healthz.summary("healthz"))
        stack = healthz.rps

        # ---------------------------------------------------- 4. session check
        log(f"4. session check: GET /me, {s.users} rotating tokens, 64 connections, {s.d_short}s")
        r.phase_begin()
        me = r.wrk("me", 64, s.threads, s.d_short, "/me", "bearer.lua", "/me", str(w / "tokens.txt"))
        r.phase_end("4 GET /me, 64 conns")
        note(me.summary("me"))

        # ---------------------------------------------------- 11. forward authentication
        forward_rows = self.forward_auth(stack)

        # ---------------------------------------------------- 1. hash ceiling
        # Measured right before the login figure that is its ratio's numerator, while the
        # server idles, so both see the machine in the same state: on a shared host the
        # time of one hash drifts by 10 % and more from one minute to the next. 100 rounds
        # (about 1.5 s) make the median robust to a passing burst of other work.
        log(f"1. hash ceiling: gatehouse hash-bench, {s.hash_rounds} rounds")
        r.phase_begin()
        hb_text = self.hash_bench()
        r.phase_end("1 hash-bench (single thread)")
        note(str(hb_text))
        hb = parse_hash_bench(str(hb_text))
        # Diagnostic: the same benchmark on every core at once. argon2id is memory-hard, so
        # parallel hashes compete for caches and memory bandwidth; this is the ceiling the
        # server can actually reach on this machine.
        r.phase_begin()
        par = []
        for c in range(1, r.cores + 1):
            p = self.hash_bench(w / f"hash-par-{c}.txt")
            assert isinstance(p, subprocess.Popen)
            par.append(p)
        for p in par:
            if p.wait(600) != 0:
                raise Failed("parallel hash-bench failed")
            r.procs.remove(p)
        r.phase_end(f"1 hash-bench × {r.cores} at once")
        par_ms_each = [parse_hash_bench((w / f"hash-par-{c}.txt").read_text())["ms"] for c in range(1, r.cores + 1)]
        par_ms = sum(par_ms_each) / len(par_ms_each)
        par_ceil = sum(1000 / x for x in par_ms_each)
        note(f"{r.cores} hash-benches at once: {fmt(par_ms)} ms per hash each → {fmt(par_ceil, 1)} hashes/s together")

        # ---------------------------------------------------- 2. login throughput
        log(f"2. login throughput: POST /login, {s.users} rotating users, 32 connections, {s.d_long}s")
        r.phase_begin()
        login = r.wrk("login", 32, s.threads, s.d_long, "/login", "post.lua", "/login", str(w / "login-bodies.jsonl"))
        login_phase = r.phase_end("2 POST /login, 32 conns")
        note(login.summary("login"))

        # ---------------------------------------------------- 5. isolation
        log("5. isolation: GET /me at 16 connections while 64 connections flood POST /login")
        r.phase_begin()
        flood_bg = r.wrk_bg("iso-login", 64, 1, s.d_long + 4, "/login", "post.lua", "/login", str(w / "login-bodies.jsonl"))
        time.sleep(2)
        iso_me = r.wrk("iso-me", 16, 1, s.d_long, "/me", "bearer.lua", "/me", str(w / "tokens.txt"))
        iso_login = r.wrk_wait(flood_bg)
        r.phase_end("5 GET /me 16 conns + POST /login 64 conns")
        note(iso_me.summary("iso-me"))
        note(iso_login.summary("iso-login"))

        # ---------------------------------------------------- 6a. wrong codes
        log(f"6a. cheap failures: POST /validate-otp with wrong codes for {s.otp_users} users, 64 connections, {s.d_short}s")
        r.phase_begin()
        otp = r.wrk("otp", 64, s.threads, s.d_short, "/validate-otp", "post.lua", "/validate-otp", str(w / "otp-bodies.jsonl"))
        r.phase_end("6a POST /validate-otp (wrong code), 64 conns")
        note(otp.summary("otp"))
        otp_probe = r.client.request("POST", "/validate-otp", {"identifier": "bench1@bench.invalid", "otp": "000000"})[0]
        note(f"a wrong guess now answers {otp_probe}")

        # ---------------------------------------------------- 7. memory
        log(f"7. memory: POST /login flood at 256 connections, {s.d_long}s")
        # Reset the peak (VmHWM) so it covers the flood only; also sample VmRSS as a fallback.
        try:
            Path(f"/proc/{main_pid}/clear_refs").write_text("5")
            hwm_reset = True
        except OSError:
            hwm_reset = False
        pre_kb = proc_kb(main_pid, "VmRSS") or 0
        r.phase_begin()
        flood_h = r.wrk_bg("flood", 256, s.threads, s.d_long, "/login", "post.lua", "/login", str(w / "login-bodies.jsonl"))
        sampled_kb, flood_threads = 0, 0
        for _ in range(s.d_long * 4 + 40):
            if flood_h[0].poll() is not None:
                break
            sampled_kb = max(sampled_kb, proc_kb(main_pid, "VmRSS") or 0)
            flood_threads = max(flood_threads, proc_kb(main_pid, "Threads") or 0)
            time.sleep(0.25)
        flood = r.wrk_wait(flood_h)
        r.phase_end("7 POST /login flood, 256 conns")
        note(flood.summary("flood"))
        peak_kb = (proc_kb(main_pid, "VmHWM") or 0) if hwm_reset else sampled_kb
        time.sleep(s.after_flood)
        after_kb = proc_kb(main_pid, "VmRSS") or 0
        mem_limit = 64 + r.cores * hb["m"] // 1024
        note(
            f"RSS before flood {mib(pre_kb)} MiB, peak {mib(peak_kb)} MiB (sampled max {mib(sampled_kb)}), "
            f"{s.after_flood} s later {mib(after_kb)} MiB; up to {flood_threads} threads"
        )

        # ---------------------------------------------------- 8. growth
        growth: dict[str, WrkResult] = {}
        n_small = n_big = seed_secs = 0
        if not r.quick:

            def growth_measure(tag: str, label: str) -> None:
                r.wrk(f"warm-{tag}", 8, s.threads, s.d_warm, "/me", "bearer.lua", "/me", str(w / "tokens.txt"))
                r.phase_begin()
                growth[f"login-{tag}"] = r.wrk(f"glogin-{tag}", 2, 1, s.d_growth, "/login", "post.lua", "/login", str(w / "login-bodies.jsonl"))
                r.phase_end(f"8 POST /login, 2 conns, {label} users")
                r.phase_begin()
                growth[f"me-{tag}"] = r.wrk(f"gme-{tag}", 8, s.threads, s.d_growth, "/me", "bearer.lua", "/me", str(w / "tokens.txt"))
                r.phase_end(f"8 GET /me, 8 conns, {label} users")
                note(growth[f"login-{tag}"].summary(f"glogin-{tag}"))
                note(growth[f"me-{tag}"].summary(f"gme-{tag}"))

            log(f"8. growth: {s.users + s.filler_small} users (seeding {s.filler_small} filler rows by SQL)")
            seed_users_sql(db, "filler", 1, s.filler_small, FILLER_HASH)
            n_small = int(db.scalar("SELECT COUNT(*) FROM users"))
            note(f"users: {n_small}")
            growth_measure("small", str(n_small))
            log(f"8. growth: seeding up to {s.big_total} users by SQL")
            t0 = time.monotonic()
            seed_users_sql(db, "filler", s.filler_small + 1, s.big_total - s.users, FILLER_HASH)
            n_big = int(db.scalar("SELECT COUNT(*) FROM users"))
            seed_secs = round(time.monotonic() - t0)
            note(f"users: {n_big} (seeded in {seed_secs} s)")
            growth_measure("big", str(n_big))
        r.stop_server()

        # ---------------------------------------------------- 6b. rate-limited login
        log("6b. cheap failures: POST /login for a rate-limited identifier (login limits at their defaults)")
        others = {k: v for k, v in raised.items() if k not in ("RATE_LOGIN_PER_ACCOUNT", "RATE_LOGIN_PER_ACCOUNT_LONG")}
        r.start_server("limited", db, others)
        body = {"identifier": "ratelimited-bench", "password": "not the password 123"}
        (w / "limited-body.jsonl").write_text(json.dumps(body) + "\n")
        seen = [r.client.request("POST", "/login", body)[0] for _ in range(6)]
        if seen[-1] != 429:
            raise Failed(f"the 6th login for one identifier was not 429: {seen}")
        r.phase_begin()
        limited = r.wrk("limited", 64, s.threads, s.d_short, "/login", "post.lua", "/login", str(w / "limited-body.jsonl"))
        r.phase_end("6b POST /login (429), 64 conns")
        note(limited.summary("limited"))
        r.stop_server()

        # ---------------------------------------------------- 10. second factors
        factor_rows = Factors(r).run()

        # ---------------------------------------------------- 9. import speed
        import_row = self.import_speed(db)

        # ================================================ the table
        # Three decimals: a verdict is taken on the figure as shown, so 0.197 must not pass
        # as 0.20.
        def ratio(a: float, b: float) -> float:
            return round(a / b, 3) if b else float("nan")

        def r3(x: float) -> str:
            return fmt(x, 3)

        login_ratio = ratio(login.rps, hb["ceil"])
        me_ratio = ratio(me.rps, stack)
        otp_ratio = ratio(otp.rps, stack)
        lim_ratio = ratio(limited.rps, stack)
        iso_p99 = round(iso_me.pct(99), 2)
        me_p99 = round(me.pct(99), 2)
        max_other = max((ph.other for ph in r.phases), default=0.0)
        t = [f"<!-- backend:{r.backend} -->", f"### Backend: {r.backend}", "", r.header_line(hb), ""]
        if forgot_anomaly:
            t += [f"**Server errors while seeding:** {forgot_anomaly} (asked again one at a time; see the server log).", ""]
        if max_other >= 0.2:
            t += [
                f"**Warning: the machine was not quiet.** Other processes used up to {fmt(max_other)} of {r.cores} cores during a measured phase "
                "(see *Where the CPU went*); throughput figures from those phases are low by up to that share.",
                "",
            ]
        t += ["| # | Figure | Measured | Ratio (reference from this run) | Target | Verdict |", "|---|---|---|---|---|---|"]
        t.append(f"| 1 | Hash ceiling (`gatehouse hash-bench`, {s.hash_rounds} rounds, just before figure 2) | {hb['ms_s']} ms per hash → {hb['ceil_s']} hashes/s on {r.cores} cores | — | — | — |")
        t.append(
            f"| 1′ | Hash ceiling, measured in parallel ({r.cores} `hash-bench` at once; diagnostic) | {fmt(par_ms)} ms per hash each → "
            f"{fmt(par_ceil, 1)} hashes/s together | {r3(ratio(round(par_ceil, 1), hb['ceil']))} × figure 1 | — | — |"
        )
        t.append(
            f"| 2 | Login throughput: POST /login, correct passwords, {s.users} users, 32 conns, {s.d_long}s | {login.rps} req/s ({login.errs()}), "
            f"p50 {login.p(50)} ms; server used {fmt(login_phase.server)} cores | {r3(login_ratio)} × hash ceiling "
            f"({r3(ratio(login.rps, round(par_ceil, 1)))} × figure 1′) | ≥ 0.85 | {r.judge('2 login ratio', login_ratio >= 0.85)} |"
        )
        t.append(f"| 3 | Stack ceiling: GET /healthz, 64 conns, {s.d_short}s | {stack} req/s, p50 {healthz.p(50)} ms, p99 {healthz.p(99)} ms | — | — | — |")
        # The issue's targets: ≥ 0.25 with p99 ≤ 5 ms on SQLite (database in process);
        # ≥ 0.10 on PostgreSQL and MySQL, whose server shares the two cores.
        if r.backend == "sqlite":
            me_target = "≥ 0.25; p99 ≤ 5 ms"
            me_verdict = f"{r.judge('4 /me ratio', me_ratio >= 0.25)}; p99 {r.judge('4 /me p99', me_p99 <= 5)}"
        else:
            me_target = "≥ 0.10 (p99 target is SQLite's)"
            me_verdict = r.judge("4 /me ratio", me_ratio >= 0.10)
        t.append(
            f"| 4 | Session check: GET /me, {s.users} bearer tokens, 64 conns, {s.d_short}s | {me.rps} req/s ({me.errs()}), p50 {me.p(50)} ms, "
            f"p99 {me.p(99)} ms | {r3(me_ratio)} × stack ceiling | {me_target} | {me_verdict} |"
        )
        t.append(
            f"| 5 | Isolation: GET /me p99 at 16 conns during a 64-conn POST /login flood | p99 {iso_me.p(99)} ms (p50 {iso_me.p(50)} ms, "
            f"{iso_me.rps} req/s, {iso_me.errs()}); flood {iso_login.rps} logins/s | — | p99 ≤ 20 ms | {r.judge('5 isolation p99', iso_p99 <= 20)} |"
        )
        t.append(
            f"| 6a | Cheap failure: POST /validate-otp, wrong code, {s.otp_users} users with a live code (dead after 5 tries), 64 conns, {s.d_short}s, `RESPONSE_FLOOR=0s` | "
            f"{otp.rps} req/s (every answer HTTP {otp_probe}: {otp.errs()}), p99 {otp.p(99)} ms | {r3(otp_ratio)} × stack ceiling | ≥ 0.2 | "
            f"{r.judge('6a wrong codes', otp_ratio >= 0.2)} |"
        )
        t.append(
            f"| 6b | Cheap failure: POST /login for a rate-limited identifier (login limits at defaults), 64 conns, {s.d_short}s | {limited.rps} req/s "
            f"(HTTP 429: {limited.errs()}), p99 {limited.p(99)} ms | {r3(lim_ratio)} × stack ceiling | ≥ 0.2 | {r.judge('6b limited logins', lim_ratio >= 0.2)} |"
        )
        t.append(f"| 7a | Memory: RSS at fresh idle start | {mib(idle_kb)} MiB ({idle_threads} threads) | — | ≤ 30 MiB | {r.judge('7a idle RSS', float(mib(idle_kb)) <= 30)} |")
        t.append(
            f"| 7b | Memory: peak RSS under a 256-conn POST /login flood, {s.d_long}s | {mib(peak_kb)} MiB "
            f"({'VmHWM, reset before the flood' if hwm_reset else 'sampled VmRSS'}); {flood.rps} logins/s, up to {flood_threads} threads | — | "
            f"≤ {mem_limit} MiB (64 + {r.cores} permits × {mib(hb['m'])} MiB) | {r.judge('7b peak RSS', float(mib(peak_kb)) <= mem_limit)} |"
        )
        t.append(f"| 7c | Memory: RSS {s.after_flood} s after the flood | {mib(after_kb)} MiB | — | ≤ {mem_limit} MiB | {r.judge('7c RSS after', float(mib(after_kb)) <= mem_limit)} |")
        if not r.quick:
            lg_s, lg_b = round(growth["login-small"].pct(50), 2), round(growth["login-big"].pct(50), 2)
            mg_s, mg_b = round(growth["me-small"].pct(50), 2), round(growth["me-big"].pct(50), 2)
            lg_r, mg_r = ratio(lg_b, lg_s), ratio(mg_b, mg_s)
            t.append(
                f"| 8a | Growth: POST /login p50 at 2 conns, {s.d_growth}s: {n_small} vs {n_big} users | {fmt(lg_s)} ms vs {fmt(lg_b)} ms "
                f"({growth['login-small'].rps} vs {growth['login-big'].rps} req/s) | {r3(lg_r)} (big / small) | ≤ 1.15 | {r.judge('8a login growth', lg_r <= 1.15)} |"
            )
            t.append(
                f"| 8b | Growth: GET /me p50 at 8 conns, {s.d_growth}s: {n_small} vs {n_big} users | {fmt(mg_s)} ms vs {fmt(mg_b)} ms "
                f"({growth['me-small'].rps} vs {growth['me-big'].rps} req/s) | {r3(mg_r)} (big / small) | ≤ 1.15 | {r.judge('8b /me growth', mg_r <= 1.15)} |"
            )
        else:
            t.append("| 8 | Growth: 1,000 vs 1,000,000 users | skipped (--quick) | — | within 15 % | — |")
        t.append(f"| 9 | Import speed: `gatehouse import-seed` from the old server's MySQL table into {r.backend} | {import_row} | — | — | — |")
        t += factor_rows
        t += forward_rows
        t += [
            "",
            "<details><summary>Where the CPU went (cores, averaged over each phase)</summary>",
            "",
            f"Background load before the run: {fmt(r.quiet_busy)} cores busy." + ("" if r.quick else f" Seeding {s.big_total} users by SQL took {seed_secs} s."),
            "",
            *r.phases_table(r.phases, "wrk, curl, hash-bench, import-seed, bench_factors, figure 11's nginx"),
            "",
            "</details>",
            f"<!-- /backend:{r.backend} -->",
        ]
        r.write_section(f"backend:{r.backend}", t)

    # ------------------------------------------------------------ 11. forward authentication

    NGINX_CONF = """# Figure 11 of bench/run: written into the run's work directory, nginx started on it there.
# One process (no master, no worker): it is the only nginx process, stopped by its pid.
daemon off;
master_process off;
worker_processes 1;
pid @DIR@/nginx.pid;
error_log @DIR@/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path @DIR@/client_body;
    proxy_temp_path @DIR@/proxy;
    fastcgi_temp_path @DIR@/fastcgi;
    uwsgi_temp_path @DIR@/uwsgi;
    scgi_temp_path @DIR@/scgi;
    default_type text/plain;

    # Kept-alive upstream connections, as a real deployment has them.
    upstream bench_app { server 127.0.0.1:@APP_PORT@; keepalive 32; }
    upstream gatehouse { server 127.0.0.1:@GATEHOUSE_PORT@; keepalive 32; }

    # The small app: a fixed answer (and, for the harness's probe, the user nginx passed).
    server {
        listen 127.0.0.1:@APP_PORT@;
        location = /guarded/whoami { return 200 "$http_x_auth_user\\n"; }
        location / { return 200 "hello\\n"; }
    }

    # The proxy in front of it: /open/ without authentication, /guarded/ through
    # auth_request to Gatehouse's /auth/verify as in the README's snippet. No
    # `error_page 401 =302 ...` here: a refused request stays a 401, which wrk counts
    # (it does not count a 302).
    server {
        listen 127.0.0.1:@PROXY_PORT@;

        location = /_gatehouse {
            internal;
            proxy_pass http://gatehouse/auth/verify;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
        }

        location /open/ {
            proxy_pass http://bench_app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }

        location /guarded/ {
            auth_request /_gatehouse;
            auth_request_set $gatehouse_user $upstream_http_x_auth_user;
            proxy_set_header X-Auth-User $gatehouse_user;
            proxy_pass http://bench_app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
"""

    def start_nginx(self) -> tuple[subprocess.Popen, str]:
        """nginx on the config above, in the work directory, on free loopback ports; its
        handle (in the run's processes, so that cleanup stops it on failure too) and the
        proxy's base URL."""
        r = self.r
        d = self.w / "nginx"
        d.mkdir(exist_ok=True)
        app_port, proxy_port = r.free_port(), r.free_port()
        while proxy_port == app_port:
            proxy_port = r.free_port()
        conf = d / "nginx.conf"
        conf.write_text(
            self.NGINX_CONF.replace("@DIR@", str(d))
            .replace("@APP_PORT@", str(app_port))
            .replace("@PROXY_PORT@", str(proxy_port))
            .replace("@GATEHOUSE_PORT@", str(r.port))
        )
        cmd = [r.nginx, "-p", f"{d}/", "-e", str(d / "error.log"), "-c", str(conf)]
        test = subprocess.run([*cmd, "-t"], capture_output=True, text=True, timeout=30, check=False)
        if test.returncode != 0:
            raise Failed(f"nginx -t refused the figure 11 config {conf}: {test.stderr.strip()[:600]}")
        p = r.spawn(cmd, d / "stdout.log")
        r.helpers.append(p)
        base = f"http://127.0.0.1:{proxy_port}"
        probe = Client(proxy_port)
        for _ in range(100):
            try:
                if probe.request("GET", "/open/")[0] == 200:
                    note(f"nginx up: pid {p.pid}, proxy on {base}, app on 127.0.0.1:{app_port}")
                    return p, base
            except OSError:
                pass
            if p.poll() is not None:
                break
            time.sleep(0.1)
        log_text = (d / "error.log").read_text(errors="replace") if (d / "error.log").exists() else ""
        raise Failed(f"nginx did not answer on {base}/open/ within 10 s: {log_text.strip()[-600:]}")

    def stop_nginx(self, p: subprocess.Popen) -> None:
        r = self.r
        r.stop(p)
        if p in r.helpers:
            r.helpers.remove(p)

    def forward_auth(self, stack: int) -> list[str]:
        """Figure 11: 11a, GET /auth/verify with the rotating tokens of figure 4, against
        the stack ceiling; 11b, the median latency nginx `auth_request` to /auth/verify adds
        to a small app behind nginx (/guarded/ against /open/, both with the same bearer
        tokens, interleaved twice). Answers the table rows."""
        r, s, w = self.r, self.s, self.w
        tokens = str(w / "tokens.txt")
        first = (w / "tokens.txt").read_text().split("\n", 1)[0]

        verify = r.client.request("GET", "/auth/verify", headers={"Authorization": f"Bearer {first}"})
        if verify[0] != 200 or verify[1].getheader("X-Auth-User") != "bench1":
            raise Failed(f"GET /auth/verify with a fresh token answered {verify[0]} (X-Auth-User {verify[1].getheader('X-Auth-User')!r})")
        log(f"11a. forward authentication: GET /auth/verify, {s.users} rotating tokens, 64 connections, {s.d_short}s")
        r.phase_begin()
        fa = r.wrk("verify", 64, s.threads, s.d_short, "/auth/verify", "bearer.lua", "/auth/verify", tokens)
        r.phase_end("11a GET /auth/verify, 64 conns")
        note(fa.summary("verify"))

        conns, threads, rounds = 8, 1, 2
        log(f"11b. nginx auth_request: /open/ and /guarded/ through nginx, {conns} connections, {s.d_short}s each, {rounds} rounds")
        nginx, base = self.start_nginx()
        try:
            # Probes: what the figure relies on. A stranger is refused; a session passes
            # and the app sees its user (nginx overwrites what the client claims).
            probe = Client(int(base.rsplit(":", 1)[1]))
            stranger = probe.request("GET", "/guarded/")[0]
            if stranger != 401:
                raise Failed(f"nginx /guarded/ without a session answered {stranger}, not 401: auth_request is not in the way")
            st, _, body = probe.request("GET", "/guarded/whoami", headers={"Authorization": f"Bearer {first}", "X-Auth-User": "mallory"})
            if st != 200 or body.decode(errors="replace").strip() != "bench1":
                raise Failed(f"nginx /guarded/whoami with a session answered {st} {body[:80]!r}, not 200 bench1")
            runs: dict[str, list[WrkResult]] = {"open": [], "guarded": []}
            for i in range(1, rounds + 1):
                for kind in ("open", "guarded"):
                    r.phase_begin()
                    res = r.wrk(f"nginx-{kind}-{i}", conns, threads, s.d_short, f"/{kind}/", "bearer.lua", f"/{kind}/", tokens, base=base)
                    r.phase_end(f"11b nginx /{kind}/ (round {i}), {conns} conns")
                    note(res.summary(f"nginx-{kind}-{i}"))
                    runs[kind].append(res)
        finally:
            self.stop_nginx(nginx)

        fa_ratio = round(fa.rps / stack, 3) if stack else float("nan")
        fa_ok = fa_ratio >= 0.6 and fa.non2xx == 0

        def mean(xs: list[float]) -> float:
            return sum(xs) / len(xs)

        p50 = {k: round(mean([x.pct(50) for x in v]), 2) for k, v in runs.items()}
        diff = round(p50["guarded"] - p50["open"], 2)
        bad = sum(x.non2xx + x.sockerr for v in runs.values() for x in v)
        nb_ok = diff <= 1.0 and bad == 0
        note(f"11a /auth/verify: {fmt(fa_ratio, 3)} × stack ceiling (target ≥ 0.6)")
        note(f"11b nginx auth_request: /guarded/ p50 {fmt(p50['guarded'])} ms - /open/ p50 {fmt(p50['open'])} ms = {fmt(diff)} ms (target ≤ 1 ms)")

        def each(kind: str) -> str:
            v = runs[kind]
            p = " and ".join(x.p(50) for x in v)
            rps = " and ".join(str(x.rps) for x in v)
            errs = "; ".join(x.errs() for x in v)
            return f"`/{kind}/` p50 {p} ms (mean {fmt(p50[kind])}), {rps} req/s, p99 {' and '.join(x.p(99) for x in v)} ms ({errs})"

        return [
            f"| 11a | Forward authentication: GET /auth/verify, {s.users} bearer tokens (as figure 4), 64 conns, {s.d_short}s | {fa.rps} req/s ({fa.errs()}), "
            f"p50 {fa.p(50)} ms, p99 {fa.p(99)} ms | {fmt(fa_ratio, 3)} × stack ceiling | ≥ 0.6, every answer 200 | "
            f"{r.judge('11a /auth/verify ratio', fa_ok)} |",
            f"| 11b | nginx `auth_request` overhead: a small app (nginx `return 200`) behind an nginx proxy (one process, upstream keepalive 32 to the app and "
            f"to Gatehouse), `/open/` straight to the app vs `/guarded/` through `auth_request` → /auth/verify; both with {s.users} rotating bearer tokens, "
            f"{conns} conns, {threads} wrk thread, {s.d_short}s each, alternated over {rounds} rounds | {each('guarded')}; {each('open')} | "
            f"+{fmt(diff)} ms (`/guarded/` − `/open/` mean p50) | ≤ 1 ms, every answer 200 | {r.judge('11b nginx auth_request overhead', nb_ok)} |",
        ]

    def import_speed(self, db: Database) -> str:
        """The old server's MySQL `users` table, filled by SQL, imported into a fresh
        database of the chosen backend with `gatehouse import-seed`; then imported again
        (all duplicates)."""
        r, s, w = self.r, self.s, self.w
        if "import-seed" not in subprocess.run([r.bin, "--help"], capture_output=True, text=True, check=False).stdout:
            return "n/a (import-seed not built yet)"
        try:
            admin_sql("mysql", "select 1")
        except (Failed, FileNotFoundError):
            return "n/a (the seed database needs MariaDB/MySQL on 127.0.0.1:3306 and the mysql client)"
        log(f"9. import speed: {s.import_users} seed users through gatehouse import-seed")
        seed = Database("mysql", f"gh_bench_seed_{r.rand}", w)
        r.dbs.append(seed)
        seed.create()
        seed.sql(
            "CREATE TABLE users (id INT AUTO_INCREMENT PRIMARY KEY, username VARCHAR(50) UNIQUE NOT NULL, "
            "email VARCHAR(100) UNIQUE NOT NULL, phone VARCHAR(20) UNIQUE NOT NULL, password_hash VARCHAR(255) NOT NULL);\n"
            f"{mysql_recursion(s.import_users)}\n"
            "INSERT INTO users (username, email, phone, password_hash) "
            f"WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {s.import_users}) "
            f"SELECT CONCAT('seed', n), CONCAT('seed', n, '@bench.invalid'), CONCAT('+1555', LPAD(n, 7, '0')), '{SEED_BCRYPT}' FROM s;"
        )
        target = r.new_database("_imp")
        env = {**r.base_env(), "DATABASE_URL": target.url}
        # Migrate first, so that the timing is the import alone.
        if subprocess.run([r.bin, "migrate"], env=env, cwd=w, capture_output=True, check=False).returncode != 0:
            raise Failed("gatehouse migrate failed for the import database")
        # The seed database's server does part of this work: count it as a database server.
        saved = r.db_proc_names
        r.db_proc_names = saved | {"mariadbd", "mysqld"}
        secs, lines = {}, {}
        for tag in ("first", "again"):
            r.phase_begin()
            t0 = time.monotonic()
            p = subprocess.run(
                [r.bin, "import-seed", "--from", f"mysql://root@127.0.0.1:3306/{seed.name}", "--quiet"],
                env={**env, **r.argon2_env, "RUST_LOG": "error"},
                cwd=w,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if p.returncode != 0:
                print(p.stdout, p.stderr, file=sys.stderr)
                raise Failed("import-seed failed")
            secs[tag] = time.monotonic() - t0
            r.phase_end(f"9 import-seed, {s.import_users} users ({tag})")
            lines[tag] = next((ln for ln in p.stdout.splitlines() if ln.startswith("read ")), "")
            note(f"{lines[tag]} in {fmt(secs[tag])} s")
        r.db_proc_names = saved
        return (
            f"{round(s.import_users / secs['first'])} users/s: {s.import_users} in {fmt(secs['first'])} s (`{lines['first']}`); "
            f"a second run (all duplicates) took {fmt(secs['again'])} s"
        )


# ================================================================ second factors


class Factors:
    """Figure 10 (issue 17): what a second factor costs a login. Three flows, each driven by
    examples/bench_factors.rs at the same concurrency for the same time, on a server and
    database of their own with every RATE_* raised (as server A):

    - 10: password logins (POST /login → 200), accounts without a second factor; measured
      before and after 10a, their mean is the reference of 10a and 10b;
    - 10a: password + TOTP (POST /login → 401 with an mfa_token, POST /login/mfa → 200);
      target ≥ 0.90 × figure 10 (the issue: "within 10 % of a password login");
    - 10b: passkey, no password (POST /passkeys/login/start, an ECDSA P-256 assertion over
      its challenge, POST /passkeys/login/finish → 200); target ≥ 5 × figure 10.

    A TOTP account can log in once per 30-second step (the server takes each step once,
    and accepts the steps either side of the current one), so the pool of TOTP accounts is
    sized from the first password figure: enough for the phase with room to spare. Each
    account costs two argon2id hashes to seed (register, log in), so it is seeded right
    before 10a, not before 10."""

    def __init__(self, run: Run):
        self.r = run
        self.s = run.scale
        self.w = run.work
        self.state = self.w / "factors-state.json"

    def tool(self, *args: str, timeout: float) -> dict:
        cmd = [str(self.r.factors_bin), *args]
        try:
            p = subprocess.run(cmd, cwd=self.w, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as e:
            raise Failed(f"bench_factors {args[0]} did not finish within {timeout:.0f} s") from e
        for line in p.stderr.splitlines()[:10]:
            note(line[:400])
        if p.returncode != 0:
            raise Failed(f"bench_factors {args[0]} failed (exit {p.returncode})")
        try:
            return json.loads(p.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError) as e:
            raise Failed(f"bench_factors {args[0]} printed no JSON: {p.stdout[:400]}") from e

    def seed(self, plain: int = 0, totp: int = 0, passkey: int = 0) -> None:
        t0 = time.monotonic()
        got = self.tool(
            "seed", "--url", self.r.url, "--state", str(self.state), "--prefix", f"f{self.r.rand}",
            "--plain", str(plain), "--totp", str(totp), "--passkey", str(passkey), "--parallel", "8",
            timeout=900,
        )  # fmt: skip
        note(f"seeded in {fmt(time.monotonic() - t0, 1)} s; accounts now: {got['plain']} password only, {got['totp']} TOTP, {got['passkey']} passkey")

    def measure(self, flow: str, phase: str) -> dict:
        s = self.s
        self.r.phase_begin()
        res = self.tool(
            "run", "--url", self.r.url, "--state", str(self.state), "--flow", flow,
            "--conns", str(s.factor_conns), "--duration", str(s.d_long),
            timeout=s.d_long + 60,
        )  # fmt: skip
        self.r.phase_end(f"{phase}, {s.factor_conns} conns")
        note(self.summary(flow, res))
        return res

    @staticmethod
    def summary(name: str, res: dict) -> str:
        starved = f", accounts ran out {res['starved']} times ({fmt(res['starved_ms'] / 1000, 1)} s of waiting)" if res.get("starved") else ""
        kinds = f" {res['error_kinds']}" if res["errors"] else ""
        return (
            f"{name}: {fmt(res['rate'], 1)} logins/s ({res['logins']} in {fmt(res['elapsed_s'], 1)} s), p50 {fmt(res['p50_ms'])} ms, "
            f"p99 {fmt(res['p99_ms'])} ms, errors {res['errors']}{kinds}{starved}"
        )

    @staticmethod
    def errs(res: dict) -> str:
        kinds = "".join(f", {n} × {k}" for k, n in res["error_kinds"].items())
        return f"errors {res['errors']}/{res['logins'] + res['errors']}{kinds}"

    def run(self) -> list[str]:
        """Measures figure 10 and answers its table rows."""
        r, s = self.r, self.s
        db = r.new_database("_fac")
        log(f"10. second factors: server of its own ({r.backend}), every RATE_* raised to {RAISED_RULE}")
        raised = {v: RAISED_RULE for v in r.rate_vars}
        raised["RESPONSE_FLOOR"] = "0s"
        r.start_server("factors", db, raised)
        n_pk = 2 * s.factor_conns  # each worker signs with its own passkeys: counters only grow
        log(f"10. seeding {s.factor_plain} password-only and {n_pk} passkey accounts through the API")
        self.seed(plain=s.factor_plain, passkey=n_pk)

        log(f"10. password logins through bench_factors, {s.factor_conns} conns, {s.d_long}s")
        pw1 = self.measure("password", "10 POST /login (bench_factors)")

        # Each TOTP account is seeded with the step before the current one taken, so it has
        # at least two steps (the current and the next) for 10a, and one more each time a
        # step begins: 0.6 accounts per expected login leaves 20 % to spare.
        n_totp = max(s.factor_totp_min, min(s.factor_totp_max, round(pw1["rate"] * s.d_long * 0.6) + s.factor_conns))
        log(f"10a. seeding {n_totp} TOTP accounts through the API (register, log in, /mfa/totp/setup, /mfa/totp/confirm)")
        self.seed(totp=n_totp)
        log(f"10a. password + TOTP logins, {s.factor_conns} conns, {s.d_long}s")
        totp = self.measure("totp", "10a POST /login + /login/mfa (TOTP)")

        log(f"10. password logins again, {s.factor_conns} conns, {s.d_long}s")
        pw2 = self.measure("password", "10 POST /login (bench_factors, again)")

        log(f"10b. passkey logins, {s.factor_conns} conns, {s.d_long}s")
        pk = self.measure("passkey", "10b /passkeys/login/start + finish")
        r.stop_server()

        ref = (pw1["rate"] + pw2["rate"]) / 2
        totp_ratio = round(totp["rate"] / ref, 3) if ref else float("nan")
        pk_ratio = round(pk["rate"] / ref, 3) if ref else float("nan")
        note(f"10a password + TOTP: {fmt(totp_ratio, 3)} × password logins (target ≥ 0.90)")
        note(f"10b passkey: {fmt(pk_ratio, 3)} × password logins (target ≥ 5)")
        starved = ""
        if totp.get("starved"):
            starved = (
                f"; **the TOTP accounts ran out** {totp['starved']} times ({fmt(totp['starved_ms'] / 1000, 1)} s of waiting over all workers): "
                "this figure is limited by the pool of accounts"
            )
            note(f"warning: {starved[2:]}")

        def lat(res: dict) -> str:
            return f"p50 {fmt(res['p50_ms'])} ms, p99 {fmt(res['p99_ms'])} ms"

        conns, d = s.factor_conns, s.d_long
        return [
            f"| 10 | Password login through `bench_factors` (reference of 10a and 10b): POST /login → 200, {s.factor_plain} accounts without a second factor, "
            f"{conns} conns, {d}s, measured before and after 10a | {fmt(pw1['rate'], 1)} and {fmt(pw2['rate'], 1)} logins/s, mean {fmt(ref, 1)} "
            f"({self.errs(pw1)}; {self.errs(pw2)}), {lat(pw1)} | — | — | — |",
            f"| 10a | Password + TOTP login: POST /login → 401 with `mfa_token`, POST /login/mfa (`totp`) → 200; {n_totp} TOTP accounts, each 30-s step used once, "
            f"{conns} conns, {d}s | {fmt(totp['rate'], 1)} logins/s ({self.errs(totp)}), {lat(totp)} per login (two requests){starved} | "
            f"{fmt(totp_ratio, 3)} × figure 10 | ≥ 0.90 | {r.judge('10a password + TOTP ratio', totp_ratio >= 0.90)} |",
            f"| 10b | Passkey login, no password: POST /passkeys/login/start, an ECDSA P-256 assertion signed by the client, POST /passkeys/login/finish → 200; "
            f"{n_pk} passkeys, {conns} conns, {d}s | {fmt(pk['rate'], 1)} logins/s ({self.errs(pk)}), {lat(pk)} per login (two requests) | "
            f"{fmt(pk_ratio, 3)} × figure 10 | ≥ 5 | {r.judge('10b passkey ratio', pk_ratio >= 5)} |",
        ]


def parse_hash_bench(text: str) -> dict:
    """"argon2id m=19456KiB t=2 p=1: median 15.67 ms per hash ... ceiling 127.6 hashes/s"."""
    ms = re.search(r"median ([0-9.]+) ms per hash", text)
    ceil = re.search(r"ceiling ([0-9.]+) hashes/s", text)
    params = re.search(r"argon2id m=(\d+)KiB t=(\d+) p=(\d+):", text)
    if not (ms and ceil and params):
        raise Failed(f"could not parse hash-bench output: {text}")
    return {
        "ms": float(ms.group(1)),
        "ms_s": ms.group(1),
        "ceil": float(ceil.group(1)),
        "ceil_s": ceil.group(1),
        "m": int(params.group(1)),
        "t": int(params.group(2)),
        "p": int(params.group(3)),
    }


def count_statuses(statuses: list[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for st in statuses:
        counts[st] = counts.get(st, 0) + 1
    return counts


def expect_all(statuses: list[int], want: int, what: str) -> None:
    if statuses.count(want) != len(statuses):
        raise Failed(f"{what}: expected {len(statuses)} × HTTP {want}, got {count_statuses(statuses)}")


# ================================================================ production load


def redis_command(port: int, *args: str, timeout: float = 5.0) -> bytes:
    """One command to a Redis on 127.0.0.1 in RESP; the reply's payload (simple string or
    bulk string) as bytes. Enough for PING and INFO; no dependency for two commands."""
    req = f"*{len(args)}\r\n".encode() + b"".join(f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(req)
        f = s.makefile("rb")
        head = f.readline()
        if head.startswith(b"$"):
            n = int(head[1:].strip())
            return f.read(n) if n >= 0 else b""
        if head.startswith(b"-"):
            raise Failed(f"Redis answered {head.decode(errors='replace').strip()}")
        return head[1:].strip()


def redis_info(port: int) -> dict[str, str]:
    info: dict[str, str] = {}
    for section in ("commandstats", "cpu"):
        for line in redis_command(port, "INFO", section).decode().splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                info[k] = v
    return info


def task_cpu(pid: int, tid: int) -> int:
    try:
        raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    except OSError:
        return 0
    f = raw[raw.rfind(")") + 2 :].split()
    return int(f[11]) + int(f[12])


def connection_cpu(db: Database) -> dict[str, int]:
    """CPU ticks of the database server's work on this database's connections alone (the
    server's pool): PostgreSQL backends by pid (`pg_stat_activity`), MariaDB connection
    threads by their Linux thread id (`information_schema.PROCESSLIST.TID`). The shared
    services also serve other clients; this column is what our requests cost, without the
    background writers and flushers (counted in the whole-server column)."""
    out: dict[str, int] = {}
    if db.backend == "postgres":
        for row in admin_sql("postgres", f"SELECT pid FROM pg_stat_activity WHERE datname = '{db.name}'"):
            out[row[0]] = pid_cpu(int(row[0]))
    elif db.backend == "mysql":
        mpids = pids_named({"mariadbd", "mysqld"})
        if len(mpids) == 1:
            for row in admin_sql("mysql", f"SELECT TID FROM information_schema.PROCESSLIST WHERE DB = '{db.name}'"):
                if row and row[0].isdigit():
                    out[row[0]] = task_cpu(mpids[0], int(row[0]))
    return out


def redis_calls(info: dict[str, str]) -> dict[str, int]:
    calls = {}
    for k, v in info.items():
        if k.startswith("cmdstat_"):
            m = re.search(r"calls=(\d+)", v)
            if m:
                calls[k[len("cmdstat_") :]] = int(m.group(1))
    return calls


PG_COUNTERS = ("xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "tup_inserted", "tup_updated", "tup_deleted", "blks_read", "blks_hit")
MYSQL_COUNTERS = (
    "Questions",
    "Com_stmt_execute",
    "Com_select",
    "Com_insert",
    "Com_update",
    "Com_delete",
    "Com_commit",
    "Com_rollback",
    # Rows through the storage engine's handler interface (MariaDB keeps no Innodb_rows_*).
    "Handler_read_key",
    "Handler_read_next",
    "Handler_write",
    "Handler_update",
    "Handler_delete",
)


@dataclass
class Costs:
    """What one phase's requests cost, per request."""

    requests: int
    server_us: float
    db_us: float | None
    conn_us: float | None
    redis_us: float | None
    db_counters: dict[str, float]
    redis_cmds: dict[str, float]


class Production:
    """The configuration people run, and what each request costs.

    Default rate limits; clients behind a trusted proxy on 127.0.0.1, each request carrying
    its client's address in X-Forwarded-For (10,000 distinct addresses); 10,000 accounts,
    each with a live session and a live code; on PostgreSQL and MariaDB/MySQL the Redis
    limiter (a redis-server of this run's own, on a free port, so its counters and CPU are
    this server's alone). Accounts and sessions are seeded by SQL (one account registered
    through the API lends its password hash, so every login costs a real argon2id
    verification at the server's parameters); codes are asked through the API, one per
    account, as users would."""

    def __init__(self, run: Run):
        self.r = run
        self.s = run.scale
        self.w = run.work
        self.redis_port: int | None = None
        self.redis_proc: subprocess.Popen | None = None
        self.redis_note = ""

    # ------------------------------------------------------------ Redis

    def start_redis(self) -> str:
        if os.environ.get("BENCH_REDIS_URL"):
            self.redis_note = "Redis at BENCH_REDIS_URL (shared: its counters include other clients)"
            return os.environ["BENCH_REDIS_URL"]
        if shutil.which("redis-server"):
            port = self.r.free_port()
            rdir = self.w / "redis"
            rdir.mkdir(exist_ok=True)
            self.redis_proc = self.r.spawn(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(rdir)],
                self.w / "redis.log",
            )
            for _ in range(100):
                try:
                    if redis_command(port, "PING") == b"PONG":
                        self.redis_port = port
                        self.redis_note = f"Redis limiter: a redis-server of this run's own (pid {self.redis_proc.pid})"
                        note(f"redis-server up: pid {self.redis_proc.pid} on 127.0.0.1:{port}")
                        return f"redis://127.0.0.1:{port}/"
                except OSError:
                    pass
                if self.redis_proc.poll() is not None:
                    raise Failed("redis-server exited during start (see redis.log)")
                time.sleep(0.1)
            raise Failed("redis-server did not answer PING within 10 s")
        # The shared service: counters and CPU include whatever else uses it.
        self.redis_port = 6379
        self.redis_note = "Redis limiter: the shared Redis on 127.0.0.1:6379 (its counters include other clients)"
        return "redis://127.0.0.1:6379/"

    # ------------------------------------------------------------ counters

    def snapshot(self, db: Database) -> dict:
        snap: dict = {"server": pid_cpu(self.r.spid), "db": db_cpu_snapshot(self.r.db_proc_names)}
        if db.backend != "sqlite":
            snap["conn"] = connection_cpu(db)
        if self.redis_proc:
            snap["redis_cpu"] = pid_cpu(self.redis_proc.pid)
        if self.redis_port:
            snap["redis"] = redis_calls(redis_info(self.redis_port))
        if db.backend == "postgres":
            # Read from the `postgres` database, so that reading is not counted in ours.
            row = admin_sql("postgres", f"SELECT {', '.join(PG_COUNTERS)} FROM pg_stat_database WHERE datname = '{db.name}'")
            snap["dbc"] = {k: float(v) for k, v in zip(PG_COUNTERS, row[0])}
        elif db.backend == "mysql":
            rows = admin_sql("mysql", "SHOW GLOBAL STATUS")
            status = {r[0]: r[1] for r in rows if len(r) == 2}
            snap["dbc"] = {k: float(status.get(k, "0") or 0) for k in MYSQL_COUNTERS}
        return snap

    def settle(self, db: Database) -> None:
        """Before reading the counters after a phase: work that a request leaves to a
        background job (a code's transaction after /forgot-password answers) finishes and is
        counted with its phase."""
        time.sleep(self.s.pg_stats_settle if db.backend == "postgres" else 2.0)

    def costs(self, before: dict, after: dict, requests: int) -> Costs:
        n = max(requests, 1)
        server_us = (after["server"] - before["server"]) / CLK / n * 1e6
        db_us = db_cpu_delta(before["db"], after["db"]) / CLK / n * 1e6 if self.r.db_proc_names else None
        conn_us = None
        if "conn" in after:
            if self.r.backend == "mysql":
                # MariaDB hands a new connection a cached thread that may have served other
                # clients before: only threads seen at both ends count.
                ticks = sum(max(v - before["conn"][k], 0) for k, v in after["conn"].items() if k in before["conn"])
            else:
                ticks = sum(max(v - before["conn"].get(k, 0), 0) for k, v in after["conn"].items())
            conn_us = ticks / CLK / n * 1e6
        redis_us = (after["redis_cpu"] - before["redis_cpu"]) / CLK / n * 1e6 if "redis_cpu" in after else None
        dbc = {}
        if "dbc" in after:
            dbc = {k: (after["dbc"][k] - before["dbc"][k]) / n for k in after["dbc"]}
            if self.r.backend == "mysql":
                # Our own SHOW GLOBAL STATUS is one question.
                dbc["Questions"] = max(dbc["Questions"] - 1 / n, 0.0)
        rc = {}
        if "redis" in after:
            for k, v in after["redis"].items():
                d = v - before["redis"].get(k, 0)
                if k == "info":
                    d -= 2  # our own two INFO calls
                if d > 0:
                    rc[k] = d / n
        return Costs(requests, server_us, db_us, conn_us, redis_us, dbc, rc)

    # ------------------------------------------------------------ the run

    def run(self) -> None:
        r, s, w = self.r, self.s, self.w
        db = r.new_database("_prod")
        n_acc, n_addr = s.prod_accounts, s.prod_addresses
        extra = {
            # Clients arrive through a reverse proxy on 127.0.0.1 whose X-Forwarded-For is
            # believed; the proxy itself is exempt from the per-address connection cap.
            "TRUSTED_PROXIES": "127.0.0.1/32",
            "MAX_CONNECTIONS_PER_IP": "100",
        }
        limiter = "in-memory limiter (one instance)"
        if r.backend != "sqlite":
            extra["REDIS_URL"] = self.start_redis()
            extra["REDIS_KEY_PREFIX"] = f"gatehouse-bench-{r.rand}:"
            limiter = self.redis_note
        log(f"production load: {r.backend}, default rate limits, {n_acc} accounts, {n_addr} client addresses, {limiter}")
        r.start_server("production", db, extra)

        log("seeding: one account through POST /register lends its password hash")
        status = r.client.request(
            "POST",
            "/register",
            {"username": "prodtemplate", "email": "prodtemplate@bench.invalid", "password": PASSWORD},
            {"X-Forwarded-For": "10.255.255.254"},
        )[0]
        if status != 201:
            raise Failed(f"registering the template account answered {status}")
        template_hash = db.scalar("SELECT password_hash FROM users WHERE username_norm = 'prodtemplate'")
        if not template_hash.startswith("$argon2id$"):
            raise Failed(f"unexpected password hash for the template account: {template_hash[:20]}")
        log(f"seeding {n_acc} accounts and a session for each by SQL")
        t0 = time.monotonic()
        seed_users_sql(db, "prod", 1, n_acc, template_hash)
        ids = {name: int(uid) for uid, name in db.sql("SELECT id, username_norm FROM users WHERE username_norm LIKE 'prod%'")}
        now = int(time.time())
        tokens = [secrets.token_urlsafe(32) for _ in range(n_acc)]  # 43 characters, like the server's
        for start in range(0, n_acc, 1000):
            rows = ", ".join(
                f"('{hashlib.sha256(tokens[i].encode()).hexdigest()}', {ids[f'prod{i + 1}']}, {now}, {now}, {now + 12 * 3600})"
                for i in range(start, min(start + 1000, n_acc))
            )
            db.sql(f"INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, expires_at) VALUES {rows};")
        note(f"{n_acc} accounts and sessions in {fmt(time.monotonic() - t0, 1)} s")
        code = r.client.request("GET", "/me", headers={"Authorization": f"Bearer {tokens[0]}", "X-Forwarded-For": client_address(0)})[0]
        if code != 200:
            raise Failed(f"GET /me with a token seeded by SQL answered {code}: the session rows are not what the server writes")

        log(f"asking a code for each of the {n_acc} accounts through POST /forgot-password, each from its own address")
        t0 = time.monotonic()
        got = r.client.many(
            list(range(n_acc)),
            lambda i: r.client.request(
                "POST", "/forgot-password", {"identifier": f"prod{i + 1}@bench.invalid"}, {"X-Forwarded-For": client_address(i % n_addr)}
            )[0],
            parallel=16,
        )
        expect_all(got, 200, "forgot-password for the production accounts")
        # The answer comes before the code is made (so that its timing cannot tell who has
        # an account): wait, bounded, for the background jobs to write every code.
        live = 0
        for _ in range(240):
            live = int(db.scalar("SELECT COUNT(*) FROM otp_codes WHERE used_at IS NULL"))
            if live >= n_acc:
                break
            time.sleep(0.5)
        note(f"{live} live codes after {fmt(time.monotonic() - t0, 1)} s")
        if live < n_acc:
            raise Failed(f"expected {n_acc} live codes, found {live} (see the server log)")
        # The outbox worker sends (here: prints, to nobody) one message per code; let it
        # finish so its writes do not land in the first measured phase. Bounded.
        for _ in range(600):
            pending = int(db.scalar("SELECT COUNT(*) FROM outbox WHERE status = 'pending'"))
            if pending == 0:
                break
            time.sleep(0.5)
        else:
            note(f"warning: {pending} outbox messages still pending; measuring anyway")

        # The request lists: request k is account k mod N from address k mod X.
        length = max(n_acc, n_addr)

        def write(name: str, line) -> Path:
            path = w / f"prod-{name}.tsv"
            with open(path, "w") as f:
                for k in range(length):
                    method, p, body, headers = line(k % n_acc)
                    fields = [method, p, json.dumps(body) if body else "", f"X-Forwarded-For: {client_address(k % n_addr)}", *headers]
                    f.write("\t".join(fields) + "\n")
            return path

        files = {
            "me": write("me", lambda i: ("GET", "/me", None, [f"Authorization: Bearer {tokens[i]}"])),
            "login": write("login", lambda i: ("POST", "/login", {"identifier": f"prod{i + 1}", "password": PASSWORD}, [])),
            "otp": write("otp", lambda i: ("POST", "/validate-otp", {"identifier": f"prod{i + 1}@bench.invalid", "otp": "000000"}, [])),
            "forgot": write("forgot", lambda i: ("POST", "/forgot-password", {"identifier": f"prod{i + 1}@bench.invalid"}, [])),
        }
        scenarios = [
            ("P1", "me", "/me", 64, f"Session checks: GET /me, {n_acc} sessions"),
            ("P2", "login", "/login", 32, f"Logins: POST /login, correct passwords, {n_acc} accounts"),
            ("P3", "otp", "/validate-otp", 64, f"Code guesses: POST /validate-otp, wrong codes for {n_acc} accounts with a live code"),
            ("P4", "forgot", "/forgot-password", 64, f"Forgot password: POST /forgot-password for {n_acc} accounts"),
        ]
        first_phase = len(r.phases)
        results: list[tuple[str, str, int, WrkResult, Costs, Phase]] = []
        self.settle(db)
        before = self.snapshot(db)
        for tag, name, path, conns, label in scenarios:
            log(f"{tag}. {label}, from {n_addr} addresses, {conns} connections, {s.d_prod}s")
            r.phase_begin()
            res = r.wrk(f"prod-{name}", conns, s.threads, s.d_prod, path, "replay.lua", str(files[name]))
            ph = r.phase_end(f"{tag} {path} (production), {conns} conns")
            note(res.summary(f"prod-{name}"))
            self.settle(db)
            after = self.snapshot(db)
            c = self.costs(before, after, res.total)
            before = after
            note(
                f"per request: server {fmt(c.server_us, 1)} µs CPU"
                + (f", database {fmt(c.db_us, 1)} µs (its connections {fmt(c.conn_us or 0, 1)} µs)" if c.db_us is not None else "")
                + (f", Redis {fmt(c.redis_us, 1)} µs" if c.redis_us is not None else "")
                + (f", Redis commands {sum(c.redis_cmds.values()):.2f}" if c.redis_cmds else "")
            )
            results.append((tag, label, conns, res, c, ph))
        r.stop_server()
        if self.redis_proc:
            r.stop(self.redis_proc)
        self.table(db, limiter, n_acc, n_addr, results, r.phases[first_phase:])

    # ------------------------------------------------------------ the tables

    def table(self, db: Database, limiter: str, n_acc: int, n_addr: int, results: list, phases: list[Phase]) -> None:
        r, s = self.r, self.s
        t = [
            f"<!-- production:{r.backend} -->",
            f"### Production load: {r.backend}",
            "",
            f"{r.date} · {r.cores} cores (`nproc`) · {r.cpu_model} · commit {r.commit} · wrk ({s.threads} threads) on the same cores as the server"
            + (" · --smoke (toy scale: figures mean nothing)" if r.smoke else ""),
            "",
            f"Default rate limits · `TRUSTED_PROXIES=127.0.0.1/32`, each request from one of {n_addr} client addresses in `X-Forwarded-For` · "
            f"{n_acc} accounts, each with a live session and a live code at the start · {limiter} · request k is account k mod {n_acc} "
            f"from address k mod {n_addr} · each phase {s.d_prod} s, in this order, on one server.",
            "",
            "| # | Scenario | Throughput and latency | Answers by status |",
            "|---|---|---|---|",
        ]
        for tag, label, conns, res, _c, _ph in results:
            st = ", ".join(f"{k}: {v}" for k, v in sorted(res.statuses.items())) or "—"
            t.append(
                f"| {tag} | {label}, {conns} conns, {s.d_prod}s | {res.rps} req/s, p50 {res.p(50)} ms, p99 {res.p(99)} ms "
                f"(socket errors {res.sockerr}) | {st} |"
            )
        t += [
            "",
            "Per request (averaged over every answer of the phase, whatever its status). Redis commands are `INFO commandstats`"
            " deltas: the commands a script runs (get, set, time under evalsha) are counted too; evalsha and del are round trips.",
            "",
        ]
        if r.backend == "postgres":
            dbc_head = "PostgreSQL per request (`pg_stat_database` of this database): transactions · rows returned / fetched · rows written (ins+upd+del)"
        elif r.backend == "mysql":
            dbc_head = (
                "MariaDB/MySQL per request (`SHOW GLOBAL STATUS`, whole server): statements (Questions) · prepared executions · "
                "rows read (Handler_read_key + _next) · rows written (Handler_write + _update + _delete)"
            )
        else:
            dbc_head = "Database counters"
        head = ["#", "Server CPU", "Database server CPU: whole server (this server's connections)", "Redis CPU", dbc_head, "Redis commands"]
        t += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for tag, _label, _conns, _res, c, _ph in results:
            if r.backend == "postgres":
                d = c.db_counters
                dbc = (
                    f"{fmt(d['xact_commit'] + d['xact_rollback'])} · {fmt(d['tup_returned'], 1)} / {fmt(d['tup_fetched'])} · "
                    f"{fmt(d['tup_inserted'] + d['tup_updated'] + d['tup_deleted'])}"
                )
            elif r.backend == "mysql":
                d = c.db_counters
                dbc = (
                    f"{fmt(d['Questions'])} · {fmt(d['Com_stmt_execute'])} · {fmt(d['Handler_read_key'] + d['Handler_read_next'])} · "
                    f"{fmt(d['Handler_write'] + d['Handler_update'] + d['Handler_delete'])}"
                )
            else:
                dbc = "— (in process; not counted)"
            rcmd = ", ".join(f"{k} {v:.2f}" for k, v in sorted(c.redis_cmds.items())) if c.redis_cmds else "—"
            t.append(
                f"| {tag} | {fmt(c.server_us, 1)} µs | "
                + (f"{fmt(c.db_us, 1)} µs ({fmt(c.conn_us or 0, 1)} µs)" if c.db_us is not None else "— (in process)")
                + " | "
                + (f"{fmt(c.redis_us, 1)} µs" if c.redis_us is not None else "—")
                + f" | {dbc} | {rcmd} |"
            )
        t += [
            "",
            "<details><summary>Where the CPU went (cores, averaged over each phase)</summary>",
            "",
            *r.phases_table(phases, "wrk"),
            "",
            "</details>",
            f"<!-- /production:{r.backend} -->",
        ]
        r.write_section(f"production:{r.backend}", t)


def parse_args(argv: list[str]) -> tuple[str, bool, bool, set[str]]:
    backend, quick, smoke, only = "sqlite", False, False, {"standard", "production"}
    args = list(argv)
    while args:
        a = args.pop(0)
        if a in ("sqlite", "postgres", "mysql"):
            backend = a
        elif a == "--quick":
            quick = True
        elif a == "--smoke":
            smoke = True
        elif a == "--only" or a.startswith("--only="):
            value = a.split("=", 1)[1] if "=" in a else (args.pop(0) if args else "")
            if value not in ("standard", "production", "factors"):
                print(f"bench/run: --only takes standard, production or factors, not '{value}'", file=sys.stderr)
                print(USAGE, file=sys.stderr)
                sys.exit(EXIT_USAGE)
            only = {value}
        elif a in ("-h", "--help"):
            print(USAGE, file=sys.stderr)
            sys.exit(EXIT_USAGE)
        else:
            print(f"bench/run: unknown argument '{a}'", file=sys.stderr)
            print(USAGE, file=sys.stderr)
            sys.exit(EXIT_USAGE)
    return backend, quick, smoke, only


def main(argv: list[str]) -> int:
    backend, quick, smoke, only = parse_args(argv)
    run = Run(backend, quick, smoke, only, SMOKE if smoke else Scale())

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    failed = True
    try:
        rc = run.main()
        failed = False
        return rc
    except Failed as e:
        print(f"bench/run: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    finally:
        run.cleanup(failed)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
