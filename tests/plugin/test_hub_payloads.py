"""Hub dataset references, hub webhook payloads (what the hub sends), and notification destinations."""

from __future__ import annotations

import pytest

from hubtune.destinations import DestinationRefused, check_url
from hubtune.settings import Settings
from plugin import InvalidRepoId, parse_dataset_ref
from plugin.webhooks import InvalidWebhook, parse_hub_webhook, secret_matches

SHA = "a" * 40
# A delivery as the Hugging Face Hub sends it (camelCase; trimmed).
HUB_PAYLOAD = {
    "event": {"action": "update", "scope": "repo.content"},
    "repo": {"type": "dataset", "name": "acme/tickets", "id": "6512", "private": False, "owner": {"id": "61"},
             "url": {"web": "https://huggingface.co/datasets/acme/tickets"}, "headSha": SHA},
    "updatedRefs": [{"ref": "refs/heads/main", "oldSha": "b" * 40, "newSha": SHA}],
    "webhook": {"id": "65", "version": 3},
}


def test_dataset_refs_parse_and_pin():
    ref = parse_dataset_ref("hf://datasets/acme/tickets@v2/data/train.jsonl")
    assert (ref.repo_id, ref.revision, ref.path) == ("acme/tickets", "v2", "data/train.jsonl")
    assert str(ref.pinned(SHA)) == f"hf://datasets/acme/tickets@{SHA}/data/train.jsonl"
    assert parse_dataset_ref("hf://datasets/acme/tickets/t.jsonl").revision is None


@pytest.mark.parametrize("ref", [
    "hf://datasets/acme/tickets", "hf://datasets/acme/tickets/../../etc/passwd", "hf://datasets/../x/y.jsonl",
    "hf://models/acme/x/y.jsonl", "hf://datasets/acme/tickets/a//b.jsonl", "hf://datasets/acme/t@ bad/x.jsonl",
])
def test_bad_dataset_refs_are_refused_before_any_io(ref):
    with pytest.raises(InvalidRepoId):
        parse_dataset_ref(ref)


def test_webhook_reads_the_camel_case_the_hub_sends():
    event = parse_hub_webhook(HUB_PAYLOAD)
    assert event.head_sha == SHA and event.repo_name == "acme/tickets" and event.repo_type == "dataset"
    assert event.is_content_change and event.update_for("main").old_sha == "b" * 40
    # huggingface_hub's own payload model expects repo.head_sha and so misses what the hub sends.
    from huggingface_hub import WebhookPayload

    assert getattr(WebhookPayload.model_validate(HUB_PAYLOAD).repo, "head_sha", None) is None


@pytest.mark.parametrize("body", [[], {"event": {}}, {"event": {"action": "update", "scope": "repo"}, "repo": {}},
                                  {**HUB_PAYLOAD, "repo": {**HUB_PAYLOAD["repo"], "headSha": "not-a-sha"}}])
def test_malformed_webhooks_are_refused(body):
    with pytest.raises(InvalidWebhook):
        parse_hub_webhook(body)


def test_secret_comparison():
    assert secret_matches("s3cret", "s3cret")
    assert not secret_matches("s3cret!", "s3cret") and not secret_matches(None, "s3cret")


@pytest.mark.parametrize("url", ["http://127.0.0.1/x", "http://10.1.2.3/", "http://192.168.0.1/", "http://[::1]/",
                                 "http://localhost:8080/", "http://169.254.169.254/", "http://0.0.0.0/",
                                 "http://[::ffff:127.0.0.1]/", "ftp://example.com/", "http://user:pw@example.com/"])
def test_private_and_odd_destinations_are_refused_by_default(url):
    with pytest.raises(DestinationRefused):
        check_url(url, Settings(), resolve=False)


def test_allow_lists():
    assert check_url("http://127.0.0.1:9/x", Settings(webhook_allowed_private="127.0.0.1"), resolve=True) == "127.0.0.1"
    assert check_url("https://93.184.216.34/x", Settings(), resolve=False)
    only = Settings(webhook_allowed_hosts="*.example.com,hooks.acme.io")
    assert check_url("https://a.example.com/x", only, resolve=False)
    assert check_url("https://hooks.acme.io/x", only, resolve=False)
    with pytest.raises(DestinationRefused):
        check_url("https://example.org/x", only, resolve=False)
