"""Secret-looking params, tags and env vars are redacted before they are logged or printed."""

from runyard.tracking.redact import REDACTED, is_secret_key, redact


def test_secret_keys_are_redacted_and_kept():
    params = {
        "config.lr": 0.01,
        "MLFLOW_TRACKING_PASSWORD": "hunter2hunter2",
        "RAY_AUTH_TOKEN": "abc123",
        "aws_secret_access_key": "AKIA...",
        "env.kwargs.apiKey": "k-123",
        "wandbApiKey": "w",
        "db.credentials": {"user": "u", "pw": "p"},
        "authToken": "t",
    }
    out = redact(params)
    assert out["config.lr"] == 0.01
    for key in params:
        if key != "config.lr":
            assert out[key] == REDACTED, key


def test_ordinary_keys_are_left_alone():
    for key in ("keep", "keys_per_batch", "monkey", "tokenizer_name", "max_tokens", "num_keys", "passes", "author"):
        assert not is_secret_key(key), key


def test_credentials_inside_values_are_redacted():
    out = redact({
        "tracking.backend": "postgresql://mlflow:s3cretpw@db:5432/mlflow",
        "headers": ["Authorization: Bearer abcdefghijklmnop"],
        "nested": {"password": "x", "lr": 1},
    })
    assert out["tracking.backend"] == f"postgresql://mlflow:{REDACTED}@db:5432/mlflow"
    assert "abcdefghijklmnop" not in out["headers"][0]
    assert out["nested"] == {"password": REDACTED, "lr": 1}


def test_empty_secret_values_stay_empty():
    assert redact({"token": "", "password": None}) == {"token": "", "password": None}
