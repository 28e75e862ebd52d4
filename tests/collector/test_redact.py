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


def test_keys_match_whatever_separates_their_words(settings):
    settings.REDACT_KEYS = ["api_key", "card_number", "session_id"]
    for key in ("X-Api-Key", "APIKey", "api.key", "payment.card.number", "Card Number",
                "cardNumber", "sessionId", "http.request.header.x-session-id"):  # fmt: skip
        assert is_secret_key(key), key
    for key in ("apiary.keeper", "card", "numbers", "session.count"):
        assert not is_secret_key(key), key


def test_the_default_rules_cover_cookies_sessions_and_card_numbers():
    for key in ("http.request.header.cookie", "Set-Cookie", "payment.card.number",
                "credit_card", "JSESSIONID", "user.password", "private_key"):  # fmt: skip
        assert is_secret_key(key), key
    assert not is_secret_key("order.id")
    assert not is_secret_key("business_name")
