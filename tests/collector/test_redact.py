from collector.redact import REDACTED, is_secret_key, redact


def test_keys_match_case_insensitively_as_substrings(settings):
    settings.REDACT_KEYS = ["password", "api_key", "cardnumber"]
    assert is_secret_key("db.PASSWORD")
    assert is_secret_key("X-Api-Key")
    assert is_secret_key("cardNumber")
    assert not is_secret_key("order.id")


def test_it_redacts_nested_payloads_and_keeps_everything_else(settings):
    settings.REDACT_KEYS = ["password", "token"]
    payload = {
        "user": {
            "name": "ada",
            "password": "hunter2",
            "sessions": [{"token": "t1", "ip": "10.0.0.1"}],
        },
        "tokens_used": 3,
        "items": ["password", 1, None],
    }
    assert redact(payload) == {
        "user": {
            "name": "ada",
            "password": REDACTED,
            "sessions": [{"token": REDACTED, "ip": "10.0.0.1"}],
        },
        "tokens_used": REDACTED,
        "items": ["password", 1, None],  # values are never matched, only keys
    }
    assert payload["user"]["password"] == "hunter2"  # the input is not modified


def test_an_empty_rule_list_redacts_nothing(settings):
    settings.REDACT_KEYS = []
    assert redact({"password": "x"}) == {"password": "x"}
