"""Accounts that project admins create: a new user who is a member of one
project with one role, never a superuser (a superuser sees every project).

The members page and `manage.py createuser` both go through
`NewMemberForm`, so a username or password is judged the same way
everywhere: Django's username rules and uniqueness, and the password
validators of AUTH_PASSWORD_VALIDATORS.
"""

from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.db import transaction

from dashboard.accounts.models import Membership, Role


class NewMemberForm(UserCreationForm):
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)

    def save_in(self, project):
        """Create the user and their membership of `project` together."""
        with transaction.atomic():
            user = self.save()
            Membership.objects.create(user=user, project=project, role=self.cleaned_data["role"])
        return user


def form_errors(form) -> list[str]:
    """Every error of the form as one line each, the field named."""
    lines = []
    for field, errors in form.errors.items():
        label = form.fields[field].label if field in form.fields else ""
        for error in errors:
            lines.append(f"{label}: {error}" if label else str(error))
    return lines
