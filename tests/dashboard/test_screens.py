"""What every page shares: one time format, navigation by role, styled error
pages (a 500 that needs neither the database nor a request), the favicon and
the API page."""

import datetime as dt

import pytest
from django.template import Context, Template
from django.test import RequestFactory

from dashboard.templatetags.eventscope import relative


def render(text: str, **context) -> str:
    return Template(text).render(Context(context))


def test_times_read_the_same_everywhere_utc_to_the_second():
    iso = "2026-12-02T14:03:07.123456Z"  # as the JSON API gives it
    aware = dt.datetime(2026, 12, 2, 15, 3, 7, 999, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    expected = '<time datetime="2026-12-02T14:03:07Z">2026-12-02 14:03:07 UTC</time>'
    assert render("{{ t|when }}", t=iso) == expected
    assert render("{{ t|when }}", t=aware) == expected
    assert render("{{ t|when }}", t=None) == ""
    assert render("{{ t|when }}", t="not a time") == "not a time"


def test_ago_says_how_long_ago_with_the_exact_time_on_hover():
    moment = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=12.4)
    html = render("{{ t|ago }}", t=moment)
    assert ">12 s ago</time>" in html and "data-relative" in html
    assert f'title="{moment:%Y-%m-%d %H:%M:%S} UTC"' in html
    now = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
    assert relative(now, now) == "now"
    assert relative(now - dt.timedelta(minutes=4, seconds=59), now) == "4 min ago"
    assert relative(now - dt.timedelta(hours=3), now) == "3 h ago"
    assert relative(now - dt.timedelta(days=2, hours=5), now) == "2 d ago"
    assert relative(now + dt.timedelta(seconds=5), now) == "in 5 s"


def test_channel_names_not_ids_with_the_system_as_a_badge():
    html = render(
        "{% load flow_names %}{{ a|node_name }} | {{ b|channel_name:'sqs' }}",
        a="channel:kafka:shop.orders",
        b="https://sqs.eu-west-1.amazonaws.com/123/orders",
    )
    assert '<span title="channel:kafka:shop.orders">shop.orders</span>' in html
    assert '<span class="system" data-system="kafka">kafka</span>' in html
    assert ">orders</span>" in html and 'data-system="sqs"' in html


ADMIN_LINKS = ('href="/tokens/"', 'href="/members/"', 'href="/audit/"')


@pytest.mark.parametrize("who", ["viewer", "editor", "admin_user"])
def test_the_navigation_shows_a_role_only_the_pages_it_can_open(client, request, who):
    user = request.getfixturevalue(who)
    client.force_login(user)
    page = client.get("/").content.decode()
    nav = page[page.index('<nav class="mainnav"') : page.index("</nav>")]
    shown = [link for link in ADMIN_LINKS if link in nav]
    assert shown == (list(ADMIN_LINKS) if who == "admin_user" else [])
    assert 'href="/api/"' in nav and 'href="/failures/"' in nav
    for link in ADMIN_LINKS:
        path = link.split('"')[1]
        status = client.get(path).status_code
        assert (status == 200) == (link in shown), (who, path, status)


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/tokens/", 403, "needs the admin role"),  # a role may not open it
        ("/no/such/page/", 404, "<code>/no/such/page/</code>"),  # nothing there
    ],
)
def test_error_pages_are_styled_and_keep_the_way_on(client, viewer, path, status, says):
    client.force_login(viewer)
    response = client.get(path)
    page = response.content.decode()
    assert response.status_code == status
    assert f'id="error-{status}"' in page and "/static/css/app.css" in page and says in page
    assert 'class="mainnav"' in page


def test_the_500_page_needs_no_database_and_no_request(settings):
    # No django_db mark: any query here fails the test.
    from django.views.defaults import server_error

    settings.DEBUG = False
    response = server_error(RequestFactory().get("/"))
    page = response.content.decode()
    assert response.status_code == 500
    assert 'id="error-500"' in page and "/static/css/app.css" in page and "/readyz" in page


def test_the_favicon_is_linked_and_favicon_ico_leads_to_it(client, viewer):
    client.force_login(viewer)
    assert '<link rel="icon" href="/static/img/favicon.svg"' in client.get("/").content.decode()
    redirect = client.get("/favicon.ico")
    assert redirect.status_code == 301 and redirect["Location"] == "/static/img/favicon.svg"
    icon = client.get("/static/img/favicon.svg")
    assert icon.status_code == 200 and b"<svg" in b"".join(icon.streaming_content)


def test_the_api_page_renders_the_openapi_document_with_the_vendored_swagger_ui(client, viewer):
    assert client.get("/api/").status_code == 302  # signed in only, like every page
    client.force_login(viewer)
    page = client.get("/api/").content.decode()
    assert 'data-spec-url="/api/openapi.json"' in page
    assert "/static/vendor/swagger-ui-bundle-5.35.0.js" in page
    assert "/static/vendor/swagger-ui-5.35.0.css" in page
    assert "unpkg.com" not in page and "cdn" not in page.lower()
