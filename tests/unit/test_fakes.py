"""The fakes keep the adapters' contracts: the same scenarios against each fake and its adapter on moto.

If a fake drifts from what the real adapter does, the service tests over it stop meaning anything;
these are what catch that.
"""
from __future__ import annotations

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws

from chalicelib.jobs import FAILED, QUEUED, RUNNING, SUCCEEDED, JobStore
from chalicelib.store import ObjectChanged, ObjectMissing, Store
from tests.unit.fakes import FakeJobStore, FakeStore

BUCKET, TABLE, JOB = "contract-test", "contract-jobs", "c" * 64


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture(params=["fake", "moto"])
def store(request):
    if request.param == "fake":
        yield FakeStore()
        return
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1", config=Config(signature_version="s3v4"))
        s3.create_bucket(Bucket=BUCKET)
        yield Store(s3)


@pytest.fixture(params=["fake", "moto"])
def jobs(request):
    clock = Clock()
    if request.param == "fake":
        yield FakeJobStore(clock=clock), clock
        return
    with mock_aws():
        db = boto3.client("dynamodb", region_name="us-east-1")
        db.create_table(TableName=TABLE, KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}],
                        BillingMode="PAY_PER_REQUEST")
        yield JobStore(db, TABLE, clock=clock), clock


def test_store_contract(store, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"audio bytes")
    assert store.head(BUCKET, "k") is None and store.get_json(BUCKET, "k.json") is None
    store.upload(src, BUCKET, "k", content_type="audio/mpeg", filename="x.mp3", metadata={"duration-s": "1.000"})
    info = store.head(BUCKET, "k")
    assert (info.size, info.metadata) == (11, {"duration-s": "1.000"}) and info.etag
    assert store.head_many(BUCKET, ["k", "nope"])[1] is None
    assert store.download(BUCKET, "k", tmp_path / "got", etag=info.etag).read_bytes() == b"audio bytes"
    with pytest.raises(ObjectChanged):
        store.download(BUCKET, "k", tmp_path / "stale", etag="0" * 32)
    with pytest.raises(ObjectMissing):
        store.download(BUCKET, "gone", tmp_path / "gone")
    assert not (tmp_path / "stale").exists() and not (tmp_path / "gone").exists()
    store.put_file(src, BUCKET, "sources/a/1.mp3", metadata={"duration": "2.000"})
    store.put_file(src, BUCKET, "sources/a/0.mp3")
    assert [o.key for o in store.list_prefix(BUCKET, "sources/a/", max_keys=5)] == ["sources/a/0.mp3",
                                                                                   "sources/a/1.mp3"]
    assert store.get_file(BUCKET, "sources/a/1.mp3", tmp_path / "cached").metadata == {"duration": "2.000"}
    store.put_json(BUCKET, "k.json", {"parts": [1]})
    assert store.get_json(BUCKET, "k.json") == {"parts": [1]}
    url, expires = store.presign_get(BUCKET, "k", 3600)
    assert "k" in url and "X-Amz-Expires=3600" in url and expires.endswith("Z")


def test_job_store_contract(jobs):
    store, clock = jobs
    assert store.get(JOB) is None and store.claim(JOB, 60) is None
    assert store.create(JOB, {"request": {"x": 1}}) is True and store.create(JOB, {}) is False
    store.add_targets(JOB, ["a@example.com"], [])
    store.add_targets(JOB, ["b@example.com"], ["https://h/hook"])
    job = store.get(JOB)
    assert (job.status, job.run, job.attempts, job.spec) == (QUEUED, 1, 0, {"request": {"x": 1}})
    assert job.emails == {"a@example.com", "b@example.com"} and job.webhooks == {"https://h/hook"}

    first = store.claim(JOB, 60)
    assert (first.status, first.attempts) == (RUNNING, 1) and store.claim(JOB, 60) is None  # the lease is live
    clock.now += 61
    second = store.claim(JOB, 60)  # the first attempt's lease ran out
    assert second.attempts == 2
    assert store.set_progress(first, 0.5) is False and store.release(first) is False  # fenced out
    assert store.finish(first, SUCCEEDED, result={"a": 1}) is None
    assert store.set_progress(second, 0.5) is True and store.get(JOB).progress == 0.5
    done = store.finish(second, FAILED, error={"code": "x"})
    assert (done.status, done.error, done.result) == (FAILED, {"code": "x"}, None)

    assert store.mark_notified(JOB, "m1") is True and store.mark_notified(JOB, "m1") is False
    assert store.mark_notified("d" * 64, "m1") is False  # no such job
    again = store.requeue(done)
    assert (again.status, again.run, again.error, again.emails, again.webhooks) == (QUEUED, 2, None, set(), set())
    assert store.requeue(done) is None  # someone requeued it first
    third = store.claim(JOB, 60)
    assert store.release(third) is True and store.get(JOB).status == QUEUED
    fourth = store.claim(JOB, 60)
    finished = store.finish(fourth, SUCCEEDED, result={"cache_key": "k"})
    assert (finished.result, finished.progress, finished.notified) == ({"cache_key": "k"}, 1.0, {"m1"})
