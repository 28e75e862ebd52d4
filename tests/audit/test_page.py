"""/audit/: the audit log page for admins, linked from the navigation for
admins only, with filters and older pages (whole page or htmx fragment)."""

import datetime as dt

import pytest
from django.utils import timezone

from dashboard.audit.models import AuditEvent


@pytest.fixture
def events(project, other_project):
    now = timezone.now()
    for n in range(60):
        AuditEvent(
            action="token.created" if n % 2 else "member.added",
            actor="ada" if n % 3 else "ed",
            project=project,
            project_slug="shop",
            target=f"target-{n:02d}",
            ip="192.0.2.1",
            details={"after": {"role": "viewer"}} if n == 59 else {},
            time=now - dt.timedelta(minutes=60 - n),
        ).save()
    AuditEvent(action="token.created", actor="otto", project=other_project, target="theirs").save()


def test_only_admins_see_the_page_and_the_link(client, viewer, editor, admin_user, events):
    for user in (viewer, editor):
        client.force_login(user)
        assert client.get("/audit/").status_code == 403
        assert 'href="/audit/"' not in client.get("/alerts/").content.decode()
    client.force_login(admin_user)
    assert 'href="/audit/"' in client.get("/alerts/").content.decode()
    page = client.get("/audit/")
    html = page.content.decode()
    assert page.status_code == 200 and 'aria-current="page">Audit' in html
    assert "target-59" in html and "API token created" in html and "theirs" not in html
    assert "&quot;role&quot;: &quot;viewer&quot;" in html  # details, escaped


def test_filters_and_older_pages(client, admin_user, events):
    client.force_login(admin_user)
    html = client.get("/audit/?action=member.added&actor=ed").content.decode()
    shown = [t for t in (f"target-{n:02d}" for n in range(60)) if t in html]
    assert shown == [f"target-{n:02d}" for n in range(60) if n % 2 == 0 and n % 3 == 0]
    first = client.get("/audit/").content.decode()
    assert "target-10" in first and "target-09" not in first  # 50 a page
    older = first.split('id="audit-older" hx-get="')[1].split('"')[0].replace("&amp;", "&")
    fragment = client.get(f"/audit/{older}", HTTP_HX_REQUEST="true")
    body = fragment.content.decode()
    assert body.lstrip().startswith('<section class="panel" id="audit-events">')
    assert "target-09" in body and "target-00" in body and "target-10" not in body
    assert 'id="audit-older"' not in body


def test_a_bad_filter_is_explained(client, admin_user, events):
    client.force_login(admin_user)
    response = client.get("/audit/?since=yesterday")
    assert response.status_code == 400 and "RFC 3339" in response.content.decode()
