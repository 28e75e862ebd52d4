"""`manage.py createtoken NAME [--project P] [--scope ingest|read]`: print a new API token once."""

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

    def handle(self, *args, name, project, scope, **options):
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
        self.stderr.write(f"{scope} token {name!r} for project {slug!r} (shown once):")
        self.stdout.write(plaintext)
