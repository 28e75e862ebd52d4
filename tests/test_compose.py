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
APP_SERVICES = ("migrate", "collector", "web", "worker", "demo")
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
    assert "pgdata" in compose["volumes"]


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
    assert service["environment"]["EVENTSCOPE_INGEST_AUTH"] == "off"


def test_the_migration_runs_once_before_everything_that_uses_the_database(services):
    migrate = services["migrate"]
    assert command_of(migrate)[:3] == ["python", "manage.py", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("collector", "web", "worker"):
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name


def test_the_collector_publishes_otlp_ports_and_a_readiness_check(services):
    collector = services["collector"]
    assert {"4317:4317", "4318:4318"} <= set(collector["ports"])
    assert command_of(collector)[-2:] == ["--host", "0.0.0.0"]
    assert "http://127.0.0.1:4318/readyz" in " ".join(collector["healthcheck"]["test"])


def test_the_web_app_serves_8000_with_redis_for_live_updates(services):
    web = services["web"]
    assert "8000:8000" in web["ports"]
    assert web["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert web["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "web" in web["environment"]["EVENTSCOPE_ALLOWED_HOSTS"].split(",")


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


@pytest.mark.parametrize("name", ["migrate", "collector", "worker", "demo"])
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
    published = {
        int(mapping.split(":")[-1])
        for service in services.values()
        if service.get("build") == "."
        for mapping in service.get("ports", ())
    }
    assert published <= exposed


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
    assert {f"{port}:{port}" for port in sites} == set(proxy["ports"])
    from uvicorn import main as uvicorn_cli

    program, *arguments = command_of(web_tls)
    options = uvicorn_cli.make_context("uvicorn", arguments).params
    assert (program, options["app"], options["port"]) == (
        "uvicorn",
        "dashboard.asgi:application",
        8000,
    )
