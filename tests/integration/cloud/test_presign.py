"""Presigned uploads: one exact key under the asking thing's prefix, size-capped."""

from __future__ import annotations

import json
from urllib.parse import unquote_plus

import numpy as np
import pytest

from edgeloop.contract import ThingTopics
from functions.presign.logic import policy_conditions
from tests.support_aws import (
    LocalCloud,
    ask_presign,
    npz_bytes,
)


def test_the_answer_goes_to_the_things_own_response_topic(cloud: LocalCloud) -> None:
    answer = ask_presign("pump-7")
    [published] = cloud.announcements(ThingTopics("pump-7").upload_response)
    assert json.loads(published["payload"]) == answer
    assert published["retain"] is False
    assert str(answer["key"]).startswith("data/digits/pump-7/")


def test_the_policy_pins_the_exact_key_the_size_and_the_type(cloud: LocalCloud) -> None:
    answer = ask_presign("pump-7", size=1000)
    fields = answer["fields"]
    assert isinstance(fields, dict)
    conditions = policy_conditions(fields)
    assert {"key": answer["key"]} in conditions
    assert ["content-length-range", 1, 1000] in conditions
    assert {"Content-Type": "application/x-npz"} in conditions
    assert {"bucket": cloud.names["DATA_BUCKET"]} in conditions
    # No starts-with condition: the URL cannot name any other key.
    assert not any(isinstance(c, list) and c[0] == "starts-with" for c in conditions)


def test_the_handlers_grant_is_sigv4_in_a_region_that_still_lists_sigv2(
    cloud: LocalCloud,
) -> None:
    """The local cloud runs in eu-west-1, where botocore would sign a POST with SigV2;
    moto accepts either, so only the fields show which one the handler used."""
    answer = ask_presign("pump-7")
    fields = answer["fields"]
    assert isinstance(fields, dict)
    assert not {"AWSAccessKeyId", "signature"} & set(fields)
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    assert str(fields["x-amz-credential"]).split("/")[2:] == ["eu-west-1", "s3", "aws4_request"]
    assert {"x-amz-credential": fields["x-amz-credential"]} in policy_conditions(fields)


def test_the_url_uploads_for_real_and_the_notification_follows(cloud: LocalCloud) -> None:
    data = npz_bytes(np.ones((3, 64)), np.arange(3))
    answer = ask_presign("pump-7", size=len(data))
    response = cloud.post_upload(answer, data)
    assert response.status_code in (200, 204), response.text
    body = (
        cloud.client("s3")
        .get_object(Bucket=cloud.names["DATA_BUCKET"], Key=answer["key"])["Body"]
        .read()
    )
    assert body == data
    event = cloud.receive_event(1)
    # Notification keys are URL-encoded, as S3 sends them.
    assert any(str(answer["key"]) in unquote_plus(r["body"]) for r in event["Records"])


@pytest.mark.parametrize(
    ("request_fields", "code", "message"),
    [
        ({"size": 64 * 1024 * 1024}, "too_large", "over the 16777216-byte cap"),
        ({"model": "weather"}, "unknown_model", "'weather' is not one of digits, vibration"),
        ({"content_type": "application/zip"}, "content_type", "is not one of"),
        ({"size": -1}, "malformed", "size must be an integer >= 1"),
        ({"request_id": ""}, "malformed", "request_id"),
        ({"batch_id": "../../other-thing/x"}, "malformed", "batch_id must be"),
        ({"batch_id": 7}, "malformed", "batch_id must be"),
    ],
)
def test_bad_requests_are_refused_with_a_clear_error(
    cloud: LocalCloud, request_fields: dict[str, object], code: str, message: str
) -> None:
    answer = ask_presign("pump-7", **request_fields)
    error = answer["error"]
    assert isinstance(error, dict)
    assert error["code"] == code
    assert message in error["message"]
    assert "url" not in answer
    [published] = cloud.announcements(ThingTopics("pump-7").upload_response)
    assert json.loads(published["payload"]) == answer


def test_a_thing_name_that_could_widen_a_topic_gets_no_answer(cloud: LocalCloud) -> None:
    answer = ask_presign("pump/+")
    error = answer["error"]
    assert isinstance(error, dict)
    assert error["code"] == "bad_thing"
    assert cloud.published == []


def test_asking_again_for_the_same_batch_names_the_same_key(cloud: LocalCloud) -> None:
    """An agent whose answer or POST response was lost asks again for the same
    batch: the retry overwrites its own object instead of adding a duplicate."""
    batch = "00001795316000000000-0a1b2c3d"
    first = ask_presign("pump-7", batch_id=batch)
    again = ask_presign("pump-7", batch_id=batch)
    assert first["key"] == again["key"] == f"data/digits/pump-7/{batch}.npz"
    other = ask_presign("pump-8", batch_id=batch)
    assert other["key"] == f"data/digits/pump-8/{batch}.npz"  # still its own prefix
    data = npz_bytes(np.ones((3, 64)), np.arange(3))
    for _attempt in range(2):  # the upload itself, then its retry
        grant = ask_presign("pump-7", batch_id=batch, size=len(data))
        assert cloud.post_upload(grant, data).status_code in (200, 204)
    listed = cloud.client("s3").list_objects_v2(
        Bucket=cloud.names["DATA_BUCKET"], Prefix="data/digits/pump-7/"
    )
    assert [o["Key"] for o in listed["Contents"]] == [first["key"]]
