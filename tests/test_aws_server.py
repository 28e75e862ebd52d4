"""The moto server the AWS tests share answers over real HTTP and starts
each test empty."""

from tests.aws import REGION


def test_moto_server_answers_sqs_over_http_and_resets_between_tests(aws):
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="orders")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="hello")
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "1"
    assert aws.endpoint_url.startswith("http://127.0.0.1:")
    aws.reset()
    assert sqs.list_queues().get("QueueUrls", []) == []
    assert sqs.meta.region_name == REGION
