"""Job records against moto DynamoDB: conditional create/claim/finish, fencing, at-most-once markers."""
from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

import infra
from chalicelib.config import Settings
from chalicelib.jobs import (
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TTL_ATTRIBUTE,
    JobQueue,
    JobStore,
    notify_marker,
)

JOB = "a" * 64


class Clock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def aws():
    with mock_aws():
        settings = Settings()
        clients = {n: boto3.client(n, region_name="us-east-1") for n in ("s3", "sqs", "dynamodb", "ses")}
        urls = infra.ensure_resources(settings, clients)
        yield settings, clients, urls


@pytest.fixture
def store(aws):
    settings, clients, _ = aws
    clock = Clock()
    s = JobStore(clients["dynamodb"], settings.jobs_table, ttl_days=14, clock=clock)
    s.clock_obj = clock
    return s


def test_ttl_attribute_matches_the_table_definition():
    assert TTL_ATTRIBUTE == infra.stage_resources(Settings()).table.ttl_attribute


def test_create_is_conditional_and_sets_ttl(store, aws):
    assert store.create(JOB, {"request": {"message_parts": ["a"]}}) is True
    assert store.create(JOB, {"request": {"message_parts": ["other"]}}) is False
    job = store.get(JOB)
    assert job.status == QUEUED and job.run == 1 and job.attempts == 0
    assert job.spec == {"request": {"message_parts": ["a"]}}  # the first writer's record is kept
    raw = aws[1]["dynamodb"].get_item(TableName=aws[0].jobs_table, Key={"job_id": {"S": JOB}})["Item"]
    assert int(raw[TTL_ATTRIBUTE]["N"]) == 1_000_000 + 14 * 86400
    assert store.get("b" * 64) is None


def test_targets_accumulate_as_sets(store):
    store.create(JOB, {})
    store.add_targets(JOB, ["a@example.com"], [])
    store.add_targets(JOB, ["b@example.com", "a@example.com"], ["https://hook.example.com/x"])
    store.add_targets(JOB, [], [])
    job = store.get(JOB)
    assert job.emails == {"a@example.com", "b@example.com"} and job.webhooks == {"https://hook.example.com/x"}


def test_claim_once_then_lease_expiry_lets_another_attempt_take_over(store):
    store.create(JOB, {})
    first = store.claim(JOB, lease_seconds=60)
    assert first.status == RUNNING and first.attempts == 1
    assert store.claim(JOB, lease_seconds=60) is None  # lease still live
    store.clock_obj.now += 61
    second = store.claim(JOB, lease_seconds=60)
    assert second.attempts == 2
    # The first attempt is fenced out of every write.
    assert store.set_progress(first, 0.5) is False
    assert store.finish(first, SUCCEEDED, result={"x": 1}) is None
    assert store.release(first) is False
    assert store.set_progress(second, 0.5) is True
    done = store.finish(second, FAILED, error={"message": "nope", "part": 2})
    assert done.status == FAILED and done.error == {"message": "nope", "part": 2}
    assert store.claim(JOB, lease_seconds=60) is None  # finished jobs are never claimed again


def test_release_returns_a_job_to_the_queue(store):
    store.create(JOB, {})
    job = store.claim(JOB, lease_seconds=600)
    assert store.release(job) is True
    assert store.get(JOB).status == QUEUED
    assert store.claim(JOB, lease_seconds=600).attempts == 2


def test_finish_success_stores_result_and_full_progress(store):
    store.create(JOB, {})
    job = store.claim(JOB, 60)
    done = store.finish(job, SUCCEEDED, result={"duration_s": 1.5, "parts": []})
    assert done.result == {"duration_s": 1.5, "parts": []} and done.progress == 1.0
    view = done.public()
    assert view["status"] == "succeeded" and view["created_at"].endswith("Z") and "emails" not in view


def test_requeue_starts_a_new_run_once(store):
    store.create(JOB, {})
    store.add_targets(JOB, ["old@example.com"], ["https://hook.example.com/"])
    job = store.claim(JOB, 60)
    done = store.finish(job, FAILED, error={"message": "x"})
    again = store.requeue(done)
    assert again.status == QUEUED and again.run == 2 and again.error is None
    assert again.emails == set() and again.webhooks == set()  # the old run's targets were told
    assert store.requeue(done) is None  # a concurrent requeue of the same finished state loses


def test_mark_notified_is_true_exactly_once(store):
    store.create(JOB, {})
    marker = notify_marker(1, SUCCEEDED, "email", "a@example.com")
    assert store.mark_notified(JOB, marker) is True
    assert store.mark_notified(JOB, marker) is False
    assert store.mark_notified(JOB, notify_marker(2, SUCCEEDED, "email", "a@example.com")) is True
    assert "a@example.com" not in marker


def test_progress_is_clamped(store):
    store.create(JOB, {})
    job = store.claim(JOB, 60)
    store.set_progress(job, 7)
    assert store.get(JOB).progress == 1.0


def test_queue_send_uses_job_id_as_group_and_dedup(aws):
    settings, clients, urls = aws
    queue = JobQueue(clients["sqs"], settings.queue_name)
    queue.send(JOB)
    queue.send(JOB)  # deduplicated
    queue.send(JOB, run=2)  # a re-run is a new message
    got = clients["sqs"].receive_message(QueueUrl=urls["queue_url"], MaxNumberOfMessages=10,
                                         AttributeNames=["All"])["Messages"]
    assert [json.loads(m["Body"]) for m in got] == [{"job_id": JOB, "run": 1}, {"job_id": JOB, "run": 2}]
    assert {m["Attributes"]["MessageGroupId"] for m in got} == {JOB}
    assert [m["Attributes"]["MessageDeduplicationId"] for m in got] == [JOB, f"{JOB}-2"]
