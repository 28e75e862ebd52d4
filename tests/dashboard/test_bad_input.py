"""Parameters a caller got wrong are answered 400 with a message (404 for an id in
a path that cannot exist), never 500: a wrong window, and NUL characters, which
PostgreSQL text cannot hold."""

import pytest

from tests.dashboard.world import store_order


@pytest.mark.usefixtures("telemetry_db")
def test_a_wrong_window_on_the_failures_page_is_explained(client, viewer, project):
    store_order(project.id, event_id="evt-w")
    client.force_login(viewer)
    response = client.get("/failures/?window=bad")
    assert response.status_code == 400
    html = response.content.decode()
    assert "window=&#x27;bad&#x27;: expected one of 15m, 1h, 6h, 24h, 7d" in html
    assert "evt-w" in html  # the default window is shown instead
    backwards = client.get("/failures/?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z")
    assert (
        backwards.status_code == 400 and "since must be before until" in backwards.content.decode()
    )


@pytest.mark.parametrize(
    "url",
    [
        "/api/failures?service=%00",
        "/api/failures?error=boom%00",
        "/api/failures?channel=%00&group_by=error",
        "/api/failures?system=%00",
        "/api/failures?group=%00",
        "/api/events/evt-1?source=%00",
    ],
)
def test_nul_in_an_api_parameter_is_400(client, viewer, project, url):
    client.force_login(viewer)
    response = client.get(url)
    assert response.status_code == 400
    assert "must not contain a NUL character" in response.json()["error"]


@pytest.mark.parametrize(
    "url",
    [
        "/failures/?service=%00",
        "/failures/?error=%00",
        "/search/?q=%00",
        "/search/?q=evt-1&source=%00",
        "/events/evt-1?source=%00",
        "/events/?id=%00",
    ],
)
def test_nul_in_a_page_parameter_is_400_with_the_message(client, viewer, project, url):
    client.force_login(viewer)
    response = client.get(url)
    assert response.status_code == 400
    assert "must not contain a NUL character" in response.content.decode()


@pytest.mark.parametrize("url", ["/api/events/%00", "/api/events/evt%00-1"])
def test_nul_in_an_api_path_id_is_404(client, viewer, project, url):
    client.force_login(viewer)
    response = client.get(url)
    assert response.status_code == 404 and "no event" in response.json()["error"]


def test_nul_in_a_page_path_id_is_404(client, viewer, project):
    client.force_login(viewer)
    response = client.get("/events/%00")
    assert response.status_code == 404 and "no event" in response.content.decode()


def test_nul_in_the_project_is_404(client, viewer, read_token):
    client.force_login(viewer)
    assert client.get("/failures/?project=%00").status_code == 404
    assert client.get("/api/flow?project=%00").status_code == 404
    client.logout()
    response = client.get("/api/failures?project=%00", HTTP_AUTHORIZATION=f"Bearer {read_token}")
    assert response.status_code == 404


def test_a_mistyped_api_path_is_a_json_404_that_points_to_the_endpoints(client, read_token):
    response = client.get("/api/dead-leters", headers={"authorization": f"Bearer {read_token}"})
    assert response.status_code == 404
    assert response["content-type"] == "application/json"
    assert response.json() == {
        "error": "no API endpoint at /api/dead-leters; the endpoints are listed at /api/"
    }


def test_a_missing_api_object_says_what_is_missing_in_json(client, viewer, project):
    client.force_login(viewer)
    response = client.get("/api/flow?project=nope")
    assert response.status_code == 404
    assert response["content-type"] == "application/json"
    assert response.json() == {"error": "no project 'nope' that you can see"}
    page = client.get("/failures/?project=nope")
    assert (
        page.status_code == 404
        and "No project &#x27;nope&#x27; that you can see." in page.content.decode()
    )


def test_a_mistyped_page_is_the_styled_html_404(client, viewer):
    client.force_login(viewer)
    response = client.get("/flw/")
    assert response.status_code == 404
    assert response["content-type"].startswith("text/html")
    assert "Not found · Eventscope" in response.content.decode()
