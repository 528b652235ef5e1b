"""The README's two commands: serve the example chat, run the test suite.

    examples/chat/serve [serve flags]    runs  python3 .ci/devenv.py serve [serve flags]
    .ci/test [pytest arguments]          runs  python3 .ci/devenv.py test [pytest arguments]

Both start from a fresh clone with nothing but Python 3.11+ and git, from any
directory. They keep one virtualenv, ``.venv`` in the checkout (git-ignored), or
the one ``CHANNELS_RUNTIME_VENV`` names; it is created when missing. Before
installing anything, the virtualenv's own interpreter compares what
``pyproject.toml`` asks for (the package from this checkout, editable, and its
dependencies and extras) with what is installed; pip runs only when something is
missing or out of range, so a second run starts at once and a changed
``pyproject.toml`` is picked up.

``serve`` installs what serving needs (the ``trio`` and ``uvloop`` extras, not the
test tools), applies the example's migrations, and replaces itself with
``channels-runtime serve chat.asgi`` run from ``examples/chat`` with the
repository's ``hypercorn.toml``; its flags (``--worker-class trio``,
``--bind 127.0.0.1:9000``...) override that file.

``test`` installs the ``tests`` and ``docs`` extras, Debian's Chromium for the
browser test (``.ci/install-browser``), starts PostgreSQL and Redis when they are
installed but not running, and runs pytest from the repository root. pytest's
status is the command's; its status 5 (no test collected) fails like any other.
``.ci/run`` (CI) calls this command, so CI and the README run the same thing.

Environment:

``CHANNELS_RUNTIME_VENV``     the virtualenv to use or create (default: ``.venv`` in the checkout)
``CHANNELS_RUNTIME_EXTRAS``   more extras of the package to install, separated by commas,
                              e.g. ``compat-graphql-ws`` (CI's second run)
``CHANNELS_RUNTIME_REQUIRE``  more requirements installed with the package, separated
                              by spaces, e.g. ``Django>=4.2,<5`` (CI's second run)
``PYTHON``                    the interpreter that creates the virtualenv (default ``python3``;
                              read by the two shell scripts)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "chat"
MIN_PYTHON = (3, 11)
SERVE_EXTRAS = ("trio", "uvloop")
TEST_EXTRAS = ("tests", "docs")
#: Services the suite talks to: name, port, what starts it on a Debian machine.
SERVICES = (
    ("PostgreSQL", 5432, "pg_ctlcluster"),
    ("Redis", 6379, "redis-server"),
)


class SetupError(Exception):
    """A step that cannot go on; the message says what to do."""


#: The command a person typed, by subcommand: what messages start with.
LABELS = {"serve": "examples/chat/serve", "test": ".ci/test"}
label = "devenv"


def say(message: str) -> None:
    print(f"[{label}] {message}", file=sys.stderr, flush=True)


# -- the virtualenv ------------------------------------------------------------------


def venv_dir() -> Path:
    configured = os.environ.get("CHANNELS_RUNTIME_VENV")
    return Path(configured).expanduser().absolute() if configured else ROOT / ".venv"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def extra_requirements() -> list[str]:
    return os.environ.get("CHANNELS_RUNTIME_REQUIRE", "").split()


def with_extra_extras(extras: tuple[str, ...]) -> tuple[str, ...]:
    """``extras`` and those ``CHANNELS_RUNTIME_EXTRAS`` adds, each once, in order."""
    more = os.environ.get("CHANNELS_RUNTIME_EXTRAS", "").replace(",", " ").split()
    return tuple(dict.fromkeys([*extras, *more]))


def venv_environ(venv: Path) -> dict[str, str]:
    """The environment of an activated ``venv``."""
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def create_venv(venv: Path) -> None:
    say(f"creating the virtualenv {venv}")
    result = subprocess.run([sys.executable, "-m", "venv", str(venv)], check=False)
    if result.returncode != 0 or not venv_python(venv).exists():
        raise SetupError(
            f"'{sys.executable} -m venv {venv}' failed. On Debian and Ubuntu the venv "
            "module is a separate package: apt-get install python3-venv"
        )


def missing_in_venv(venv: Path, extras: tuple[str, ...], require: list[str]) -> list[str]:
    """What the virtualenv lacks, as reported by its own interpreter (empty: nothing)."""
    command = [str(venv_python(venv)), __file__, "missing", ",".join(extras), *require]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode not in (0, 1):
        raise SetupError(
            f"the virtualenv {venv} does not work ({result.stderr.strip() or result.returncode}); "
            "remove it and run this command again"
        )
    return result.stdout.splitlines()


def ensure_venv(extras: tuple[str, ...]) -> Path:
    """The virtualenv, created if missing, with this checkout and ``extras`` installed."""
    venv = venv_dir()
    if not venv_python(venv).exists():
        create_venv(venv)
    extras = with_extra_extras(extras)
    require = extra_requirements()
    missing = missing_in_venv(venv, extras, require)
    if not missing:
        return venv
    spec = f"{ROOT}[{','.join(extras)}]"
    wanted = " ".join([f"channels-runtime[{','.join(extras)}]", *require])
    say(f"installing {wanted} into {venv}")
    for line in missing[:10]:
        say(f"  needed: {line}")
    command = [str(venv_python(venv)), "-m", "pip", "install", "--quiet", "-e", spec, *require]
    if subprocess.run(command, env=venv_environ(venv), check=False).returncode != 0:
        raise SetupError(f"pip could not install {spec} {' '.join(require)} (see above)")
    still = missing_in_venv(venv, extras, require)
    if still:
        raise SetupError("after pip install, still not satisfied: " + "; ".join(still))
    return venv


# -- what pyproject.toml asks for, checked inside the virtualenv ----------------------


def _packaging() -> tuple[Any, Any]:
    try:
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name
    except ImportError:  # a fresh virtualenv has pip, which vendors packaging
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.utils import canonicalize_name
    return Requirement, canonicalize_name


def missing_requirements(root: Path, extras: tuple[str, ...], require: list[str]) -> list[str]:
    """Each unmet requirement of ``root``'s project with ``extras``, and of ``require``.

    Runs in the interpreter whose packages are checked. The project itself must
    be installed editable from ``root``. Every dependency must be installed at a
    version its specifier allows, and one asked for with extras
    (``psycopg[binary]``) must have what those extras require too.
    """
    import tomllib
    from importlib import metadata

    requirement_type, canonical = _packaging()
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    optional = project.get("optional-dependencies", {})
    problems: list[str] = []

    if sys.version_info < MIN_PYTHON:
        problems.append(f"Python 3.11 or newer (this virtualenv has {sys.version.split()[0]})")

    try:
        direct_url = metadata.distribution(project["name"]).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        problems.append(f"{project['name']} (not installed)")
    else:
        info = json.loads(direct_url or "{}")
        url = urlparse(info.get("url", ""))
        editable = info.get("dir_info", {}).get("editable", False)
        if not (editable and url.scheme == "file" and Path(unquote(url.path)) == root):
            problems.append(f"{project['name']} (installed, but not editable from {root})")

    # The project's requirements with its extras, self-references
    # (``channels-runtime[trio,uvloop]`` inside an extra) expanded.
    wanted: list[Any] = []
    pending: list[str] = list(extras)

    def take(lines: list[str]) -> None:
        for line in lines:
            requirement = requirement_type(line)
            if canonical(requirement.name) == canonical(project["name"]):
                pending.extend(requirement.extras)
            else:
                wanted.append(requirement)

    take([*project.get("dependencies", []), *require])
    expanded: set[str] = set()
    while pending:
        extra = pending.pop()
        if extra in expanded:
            continue
        expanded.add(extra)
        if extra not in optional:
            problems.append(f"{project['name']}[{extra}] (no such extra in pyproject.toml)")
            continue
        take(optional[extra])

    checked: set[str] = set()

    def check(requirement: Any, extra: str) -> None:
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            return
        if str(requirement) in checked:
            return
        checked.add(str(requirement))
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{requirement} (not installed)")
            return
        if not requirement.specifier.contains(dist.version, prereleases=True):
            problems.append(f"{requirement} ({dist.version} installed)")
            return
        for wanted_extra in requirement.extras:
            for line in dist.requires or []:
                check(requirement_type(line), wanted_extra)

    for requirement in wanted:
        check(requirement, "")
    return problems


# -- services and the browser (the test command) -----------------------------------


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def start_service(name: str, port: int, program: str) -> None:
    """Start the machine's own PostgreSQL or Redis when installed and not listening."""
    if name == "PostgreSQL" and os.environ.get("DATABASE_URL"):
        return  # the tests use the server DATABASE_URL names
    if port_open(port):
        return
    if program == "pg_ctlcluster" and Path("/etc/postgresql").is_dir():
        for version in sorted(os.listdir("/etc/postgresql")):
            say(f"starting PostgreSQL {version}")
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                check=False,
            )
            break
    elif program == "redis-server" and _which("redis-server"):
        say("starting redis-server on 127.0.0.1:6379")
        subprocess.run(
            ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(port),
             "--save", "", "--appendonly", "no"],
            check=False,
        )
    if not port_open(port):
        say(
            f"{name} is not running on 127.0.0.1:{port}; the tests that need it are skipped "
            "(under CI=true they fail). On Debian: apt-get install postgresql redis-server"
        )


def _which(program: str) -> bool:
    return any(
        os.access(Path(folder) / program, os.X_OK)
        for folder in os.environ.get("PATH", "").split(os.pathsep)
        if folder
    )


def install_browser() -> None:
    """Debian's Chromium, for tests/test_browser_chat.py (idempotent)."""
    result = subprocess.run(["bash", str(ROOT / ".ci" / "install-browser")], check=False)
    if result.returncode != 0:
        if os.environ.get("CI") == "true":
            raise SetupError(".ci/install-browser failed")
        say("could not install Chromium; the browser tests are skipped")


# -- the two commands -----------------------------------------------------------------


def serve(args: list[str]) -> int:
    venv = ensure_venv(SERVE_EXTRAS)
    env = venv_environ(venv)
    migrate = [str(venv_python(venv)), "manage.py", "migrate", "--noinput"]
    if subprocess.run(migrate, cwd=EXAMPLE, env=env, check=False).returncode != 0:
        raise SetupError("manage.py migrate failed (see above)")
    command = [
        str(venv / "bin" / "channels-runtime"),
        "serve",
        "chat.asgi",
        "--config",
        str(ROOT / "hypercorn.toml"),
        *args,
    ]
    os.chdir(EXAMPLE)
    os.execve(command[0], command, env)
    return 1  # not reached


def test(args: list[str]) -> int:
    venv = ensure_venv(TEST_EXTRAS)
    install_browser()
    for service in SERVICES:
        start_service(*service)
    command = [str(venv_python(venv)), "-m", "pytest", *args]
    say(f"python -m pytest {' '.join(args)}  (in {ROOT}, virtualenv {venv})")
    status = subprocess.run(command, cwd=ROOT, env=venv_environ(venv), check=False).returncode
    if status == 5:
        say("pytest collected no test: that is a failure")
    return status


def main(argv: list[str]) -> int:
    if sys.version_info < MIN_PYTHON:
        found = ".".join(map(str, sys.version_info[:3]))
        say(f"needs Python 3.11 or newer; {sys.executable} is {found}. Set PYTHON=python3.x")
        return 2
    if not argv or argv[0] not in ("serve", "test", "missing"):
        print(__doc__, file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    global label
    label = LABELS.get(command, label)
    try:
        if command == "missing":  # internal: run by ensure_venv in the virtualenv
            extras = tuple(extra for extra in args[0].split(",") if extra) if args else ()
            problems = missing_requirements(ROOT, extras, args[1:])
            for problem in problems:
                print(problem)
            return 1 if problems else 0
        return serve(args) if command == "serve" else test(args)
    except SetupError as exc:
        say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
