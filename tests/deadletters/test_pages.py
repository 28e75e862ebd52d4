"""The dead letters' pages on the running RabbitMQ: the list, a queue with its
messages (the redrive form for editors only), the redrive form, and the
redrive shown on the journey of an event it moved."""

import pytest

from dashboard.deadletters.models import Redrive
from tests.dashboard.world import store_order
from tests.deadletters.conftest import run_jobs

pytestmark = [pytest.mark.brokers, pytest.mark.django_db(transaction=True)]


def test_viewers_read_the_queues_and_messages_but_get_no_redrive_form(
    brokers, rabbit, viewer_client
):
    ids = rabbit.dead_letter(2)
    page = viewer_client.get("/dead-letters/?project=shop").content.decode()
    assert rabbit.dlq in page and "Dead letters" in page
    queue = viewer_client.get(f"/dead-letters/rabbitmq/{rabbit.dlq}?project=shop")
    html = queue.content.decode()
    assert queue.status_code == 200 and ids[0] in html and "payment 0 declined" in html
    assert "marks them redelivered" in html
    assert "redrive-go" not in html
    response = viewer_client.post(
        "/redrives/start?project=shop", {"system": "rabbitmq", "dead_letter": rabbit.dlq}
    )
    assert response.status_code == 403
    assert not Redrive.objects.exists()


def test_the_form_starts_a_redrive_and_the_event_page_shows_it(
    brokers, rabbit, editor_client, project
):
    ids = rabbit.dead_letter(3)
    store_order(project.id, event_id=ids[1])
    html = editor_client.get(f"/dead-letters/rabbitmq/{rabbit.dlq}?project=shop").content.decode()
    assert "redrive-go" in html
    response = editor_client.post(
        "/redrives/start?project=shop",
        {
            "system": "rabbitmq",
            "dead_letter": rabbit.dlq,
            "vhost": "/",
            "which": "picked",
            "message": [ids[1]],
            "rate_per_s": "10",
        },
    )
    job = Redrive.objects.get()
    assert response.status_code == 302 and response["Location"].startswith(f"/redrives/{job.pk}/")
    assert job.selection == [ids[1]] and job.rate_per_s == 10
    run_jobs()
    page = editor_client.get(f"/redrives/{job.pk}/?project=shop").content.decode()
    assert 'id="redrive-state">done' in page
    event_page = editor_client.get(f"/events/{ids[1]}?project=shop").content.decode()
    assert f"Redrive {job.pk}" in event_page and rabbit.dlq in event_page


def test_a_wrong_form_says_what_is_wrong(brokers, rabbit, editor_client):
    rabbit.dead_letter(1)
    response = editor_client.post(
        "/redrives/start?project=shop",
        {
            "system": "rabbitmq",
            "dead_letter": rabbit.dlq,
            "rate_per_s": "fast",
            "back": f"/dead-letters/rabbitmq/{rabbit.dlq}?project=shop",
        },
        follow=True,
    )
    assert "rate_per_s must be a number" in response.content.decode()
    assert not Redrive.objects.exists()
