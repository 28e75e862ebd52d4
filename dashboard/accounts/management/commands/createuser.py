"""`manage.py createuser USERNAME --project P --role viewer|editor|admin`: a new
account that is a member of one project (never a superuser).

The password comes from `--password-file` (`-` for standard input), else
from a prompt when a person is at the terminal, else it is generated and
printed once on standard output (messages go to standard error, so scripts
can capture it).
"""

import getpass
import secrets
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils.text import slugify

from collector.models import Project
from dashboard.accounts.forms import NewMemberForm, form_errors
from dashboard.accounts.models import Role


class Command(BaseCommand):
    help = "Create a user who is a member of one project with a role (not a superuser)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--project", required=True, help="project slug; created when missing")
        parser.add_argument("--role", choices=Role.values, default=Role.VIEWER)
        parser.add_argument(
            "--password-file",
            help="read the password from this file ('-': standard input); "
            "without it you are asked, or one is generated and printed once",
        )

    def handle(self, *args, username, project, role, password_file, **options):
        if slugify(project) != project or not project:
            raise CommandError(
                f"--project {project!r} is not a valid slug (letters, digits, - and _)"
            )
        generated = False
        if password_file:
            password = self._read(password_file)
        elif sys.stdin.isatty():
            password = getpass.getpass("Password: ")
            if getpass.getpass("Password (again): ") != password:
                raise CommandError("the passwords do not match")
        else:
            password, generated = secrets.token_urlsafe(18), True
        form = NewMemberForm(
            {"username": username, "password1": password, "password2": password, "role": role}
        )
        if not form.is_valid():
            raise CommandError("; ".join(form_errors(form)))
        with transaction.atomic():
            # As createtoken: a first user can be made before any telemetry arrives.
            target, created = Project.objects.get_or_create(
                slug=project, defaults={"name": project.replace("-", " ").title()}
            )
            user = form.save_in(target)
        if created:
            self.stderr.write(f"created project {project!r}")
        self.stderr.write(f"created {user.username!r}, {role} of project {target.slug!r}")
        if generated:
            self.stderr.write("generated password (shown once):")
            self.stdout.write(password)

    def _read(self, name: str) -> str:
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text()
        except OSError as exc:
            raise CommandError(f"--password-file {name}: {exc.strerror}") from None
        # A trailing newline is the file's, not the password's.
        return text.rstrip("\r\n")
