"""docker-compose.yml and the Dockerfile, checked without Docker: every service
is wired to the others as documented, and every command it runs is one this
project really has, with options its parser accepts."""

import importlib
import re
import shlex
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands, load_command_class

ROOT = Path(__file__).resolve().parents[1]
APP_SERVICES = ("migrate", "collector", "web", "worker", "demo-token", "demo")
TLS_SERVICES = ("web-tls", "tls-proxy")
DATABASE_URL = "postgresql://eventscope:eventscope@postgres:5432/eventscope"


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose):
    return compose["services"]


def command_of(service) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def test_it_is_a_compose_v2_file_with_the_whole_stack(compose, services):
    assert "version" not in compose
    assert set(services) == {"postgres", "redis", *APP_SERVICES, *TLS_SERVICES}
    assert {"pgdata", "var", "caddydata"} <= set(compose["volumes"])


def test_postgres_16_reports_healthy_with_pg_isready(services):
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert "pg_isready" in postgres["healthcheck"]["test"]
    environment = postgres["environment"]
    user, password, database = re.fullmatch(
        r"postgresql://(\w+):(\w+)@postgres:5432/(\w+)", DATABASE_URL
    ).groups()
    assert (environment["POSTGRES_USER"], environment["POSTGRES_PASSWORD"]) == (user, password)
    assert environment["POSTGRES_DB"] == database
    assert "/var/lib/postgresql/data" in postgres["volumes"][0]


def test_redis_reports_healthy(services):
    assert services["redis"]["image"].startswith("redis:")
    assert "ping" in services["redis"]["healthcheck"]["test"]


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_process_runs_the_project_image_on_the_shared_database(services, name):
    service = services[name]
    assert service["build"] == "."
    assert (ROOT / "Dockerfile").is_file()
    assert service["environment"]["DATABASE_URL"] == DATABASE_URL


# Compose's own interpolation: ${NAME}, ${NAME:-default}, ${NAME-default},
# ${NAME:?error}, ${NAME?error}; `$$` is a literal dollar.
_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, environment: dict[str, str]) -> str:
    """`value` as `docker compose` reads it with `environment` as the shell's."""

    def one(match):
        name, operator, word = match.groups()
        present = name in environment and (
            environment[name] != "" or not (operator or "").startswith(":")
        )
        if present:
            return environment[name]
        if operator and operator.endswith("?"):
            raise ValueError(word or f"{name} is required")
        return word or ""

    return _VARIABLE.sub(one, value.replace("$$", "\0")).replace("\0", "$")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_ingest_needs_a_token_whatever_the_shell_sets(services, name):
    value = services[name]["environment"]["EVENTSCOPE_INGEST_AUTH"]
    assert interpolate(value, {}) == "required"
    assert interpolate(value, {"EVENTSCOPE_INGEST_AUTH": "off"}) == "required"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_no_fixed_secret_key_the_key_is_generated_into_a_volume(services, name):
    service = services[name]
    # Unset, it is empty, and the settings generate var/secret_key once ...
    assert interpolate(service["environment"]["EVENTSCOPE_SECRET_KEY"], {}) == ""
    assert (
        interpolate(
            service["environment"]["EVENTSCOPE_SECRET_KEY"], {"EVENTSCOPE_SECRET_KEY": "k" * 50}
        )
        == "k" * 50
    )
    # ... on a volume every process shares, so they all sign with the same key
    # and it survives `docker compose down` / `up`.
    dockerfile = dict(
        pair.split("=", 1)
        for keyword, argument in dockerfile_instructions()
        if keyword == "ENV"
        for pair in argument.split()
    )
    assert f"var:{dockerfile['EVENTSCOPE_VAR_DIR']}" in service["volumes"]


def published(service) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of each mapping, with no variable set."""
    out = []
    for mapping in service.get("ports", ()):
        parts = interpolate(str(mapping), {}).split(":")
        assert len(parts) == 3, f"{mapping} publishes on every interface"
        out.append(tuple(parts))
    return out


def test_ports_listen_on_loopback_only_unless_the_user_says_otherwise(services):
    mappings = [m for service in services.values() for m in published(service)]
    assert {(port, target) for _, port, target in mappings} == {
        ("4317", "4317"), ("4318", "4318"), ("8000", "8000"),
        # the optional TLS proxy (profile "tls")
        ("8443", "8443"), ("4443", "4443"),
    }  # fmt: skip
    assert {address for address, _, _ in mappings} == {"127.0.0.1"}
    for service in services.values():
        for mapping in service.get("ports", ()):
            exposed = interpolate(str(mapping), {"EVENTSCOPE_BIND": "0.0.0.0"})
            assert exposed.startswith("0.0.0.0:"), mapping


def test_the_demo_sends_with_a_token_created_once_into_the_volume(services):
    token = services["demo-token"]
    command = command_of(token)
    assert command[2] == "createtoken" and token["restart"] == "no"
    output = command[command.index("--output") + 1]
    demo = command_of(services["demo"])
    assert demo[demo.index("--token-file") + 1] == output
    assert services["demo"]["depends_on"]["demo-token"]["condition"] == (
        "service_completed_successfully"
    )


def test_the_migration_runs_once_before_everything_that_uses_the_database(services):
    migrate = services["migrate"]
    assert command_of(migrate)[:3] == ["python", "manage.py", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("collector", "web", "worker", "demo-token"):
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name


def test_the_collector_publishes_otlp_ports_and_a_readiness_check(services):
    collector = services["collector"]
    assert {(port, target) for _, port, target in published(collector)} == {
        ("4317", "4317"), ("4318", "4318"),
    }  # fmt: skip
    assert command_of(collector)[-2:] == ["--host", "0.0.0.0"]
    assert "http://127.0.0.1:4318/readyz" in " ".join(collector["healthcheck"]["test"])


def test_the_web_app_serves_8000_with_redis_for_live_updates(services):
    web = services["web"]
    assert [(port, target) for _, port, target in published(web)] == [("8000", "8000")]
    assert web["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert web["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "web" in interpolate(web["environment"]["EVENTSCOPE_ALLOWED_HOSTS"], {}).split(",")


def test_the_demo_exports_to_the_collector_once_it_is_ready(services):
    demo = services["demo"]
    assert demo["depends_on"]["collector"]["condition"] == "service_healthy"
    command = command_of(demo)
    endpoint = command[command.index("--endpoint") + 1]
    collector_parser = load_command_class("collector", "collector").create_parser(
        "manage.py", "collector"
    )
    http_port = collector_parser.parse_args(command_of(services["collector"])[3:]).otlp_http_port
    assert endpoint == f"http://collector:{http_port}"


@pytest.mark.parametrize("name", ["migrate", "collector", "worker", "demo-token", "demo"])
def test_management_commands_exist_and_accept_their_options(services, name):
    python, manage, command, *arguments = command_of(services[name])
    assert (python, manage) == ("python", "manage.py")
    assert (ROOT / manage).is_file()
    app = get_commands()[command]
    # The parser exits (SystemExit) on an option the command does not have.
    load_command_class(app, command).create_parser("manage.py", command).parse_args(arguments)


def test_the_web_command_is_uvicorn_on_the_projects_asgi_application(services):
    from uvicorn import main as uvicorn_cli

    program, *arguments = command_of(services["web"])
    assert program == "uvicorn"
    options = uvicorn_cli.make_context("uvicorn", arguments).params
    module, attribute = options["app"].split(":")
    assert callable(getattr(importlib.import_module(module), attribute))
    assert (options["host"], options["port"]) == ("0.0.0.0", 8000)


def test_every_setting_it_passes_is_a_documented_setting(services):
    readme = (ROOT / "README.md").read_text()
    for name in APP_SERVICES:
        for variable in services[name]["environment"]:
            assert f"`{variable}`" in readme, f"{variable} (service {name}) is not in README.md"


def dockerfile_instructions():
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [line.split(None, 1) for line in lines if line and not line.startswith("#")]


def test_the_image_is_python_311_slim_and_installs_the_project():
    instructions = dockerfile_instructions()
    assert instructions[0] == ["FROM", "python:3.11-slim"]
    runs = " ".join(argument for keyword, argument in instructions if keyword == "RUN")
    assert "pip install ." in runs
    assert ["USER", "eventscope"] in instructions


def test_the_image_copies_what_the_app_reads_at_run_time():
    copied = []
    for keyword, argument in dockerfile_instructions():
        if keyword == "COPY":
            *sources, _ = argument.split()
            copied += sources
    for source in copied:
        assert (ROOT / source).exists(), source
    # Templates and static files are read from the source tree, not the wheel.
    assert {"manage.py", "dashboard", "collector", "templates", "static"} <= set(copied)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not set(copied) & set(ignored)
    assert {".git", ".venv", "var"} <= set(ignored)


def test_the_image_exposes_the_ports_compose_publishes(services):
    exposed = {
        int(port)
        for keyword, argument in dockerfile_instructions()
        if keyword == "EXPOSE"
        for port in argument.split()
    }
    targets = {
        int(target)
        for service in services.values()
        if service.get("build") == "."
        for *_, target in published(service)
    }
    assert targets <= exposed


def test_the_tls_proxy_starts_only_with_its_profile(services):
    for name in TLS_SERVICES:
        assert services[name]["profiles"] == ["tls"], name
    for name in ("postgres", "redis", *APP_SERVICES):
        assert "profiles" not in services[name], name


def test_the_tls_proxy_fronts_a_web_process_that_trusts_it_and_no_one_else(services):
    web_tls = services["web-tls"]
    environment = web_tls["environment"]
    assert environment["EVENTSCOPE_TRUST_X_FORWARDED_PROTO"] == "1"
    # Trusting X-Forwarded-Proto is only safe when the proxy is the only way in.
    assert "ports" not in web_tls
    assert environment["DATABASE_URL"] == DATABASE_URL
    readme = (ROOT / "README.md").read_text()
    for variable in environment:
        assert f"`{variable}`" in readme, variable
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    proxy = services["tls-proxy"]
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]
    sites = dict(
        re.findall(r"^https://localhost:(\d+) \{.*?reverse_proxy (\S+)", caddyfile, re.S | re.M)
    )
    assert sites == {"8443": "web-tls:8000", "4443": "collector:4318"}
    origins = environment["EVENTSCOPE_CSRF_TRUSTED_ORIGINS"].split(",")
    assert "https://localhost:8443" in origins
    assert {f"127.0.0.1:{port}:{port}" for port in sites} == {
        mapping.replace("${EVENTSCOPE_BIND:-127.0.0.1}", "127.0.0.1") for mapping in proxy["ports"]
    }
    from uvicorn import main as uvicorn_cli

    program, *arguments = command_of(web_tls)
    options = uvicorn_cli.make_context("uvicorn", arguments).params
    assert (program, options["app"], options["port"]) == (
        "uvicorn",
        "dashboard.asgi:application",
        8000,
    )
