"""Who may see a project: members and their roles.

Only the dashboard asks (the collector knows projects and tokens, not
people). The table is still `collector_membership`, where it was created
before this app held it: the move changed Django's bookkeeping, not the data.
"""

from django.conf import settings
from django.db import models

from collector.models import Project


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"  # reads everything in the project
    EDITOR = "editor", "Editor"  # also alerts, webhooks, replays
    ADMIN = "admin", "Admin"  # also tokens and users

    @classmethod
    def rank(cls, role):
        return {cls.VIEWER: 1, cls.EDITOR: 2, cls.ADMIN: 3}.get(role, 0)


class Membership(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        db_table = "collector_membership"
        constraints = [
            models.UniqueConstraint(fields=["user", "project"], name="membership_user_project")
        ]

    def __str__(self):
        return f"{self.user} is {self.role} of {self.project}"

    @staticmethod
    def has_role(user, project_id, role):
        """True if `user` holds at least `role` in the project (superusers hold every role)."""
        if not user.is_authenticated:
            return False
        if user.is_superuser:
            return True
        held = (
            Membership.objects.filter(user=user, project_id=project_id)
            .values_list("role", flat=True)
            .first()
        )
        return Role.rank(held) >= Role.rank(role)


def projects_of(user):
    """Projects `user` may see: all for a superuser, else those they are a member of."""
    if not user.is_authenticated:
        return Project.objects.none()
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user)
