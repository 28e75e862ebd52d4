"""`manage.py createtoken NAME [--project P] [--scope ingest|read] [--output FILE]`: a new API
token, printed once (or written to FILE)."""

import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils.text import slugify

from collector.models import ApiToken, Project, Scope


class Command(BaseCommand):
    help = "Create an API token and print it once (only its digest is stored)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="what the token is for, e.g. the service using it")
        parser.add_argument(
            "--project", default="default", help="project slug; created when missing"
        )
        parser.add_argument("--scope", choices=[s.value for s in Scope], default=Scope.INGEST)
        parser.add_argument(
            "--output",
            default=None,
            help="write the token to this file (readable by its owner only) instead of "
            "printing it; when the file already exists nothing is done, so a container "
            "can run this on every start",
        )

    def handle(self, *args, name, project, scope, output=None, **options):
        if output and Path(output).exists():
            self.stderr.write(f"{output} exists: no new token")
            return
        slug = slugify(project)
        if not slug or slug != project:
            raise CommandError(
                f"--project {project!r} is not a valid slug (letters, digits, - and _)"
            )
        with transaction.atomic():
            target, created = Project.objects.get_or_create(
                slug=slug, defaults={"name": slug.replace("-", " ").title()}
            )
            _, plaintext = ApiToken.issue(target, name, scope)
        if created:
            self.stderr.write(f"created project {slug!r}")
        if output:
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(plaintext + "\n")
            self.stderr.write(f"{scope} token {name!r} for project {slug!r} written to {output}")
            return
        self.stderr.write(f"{scope} token {name!r} for project {slug!r} (shown once):")
        self.stdout.write(plaintext)
