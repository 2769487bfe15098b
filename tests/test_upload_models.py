"""botocore's data, trimmed for the uploader's S3 client (eccm.upload.models): the client
resolves and sends exactly what botocore's full data gives, for AWS regions and an
S3-compatible endpoint alike."""

from __future__ import annotations

import copy
import json
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.loaders import Loader
from botocore.regions import EndpointResolver

from eccm.upload.models import (
    ENDPOINT_SERVICES,
    slim_endpoints,
    slim_session,
    without_documentation,
)


def _full_endpoints() -> Any:
    data, _path = Loader().load_data_with_path("endpoints")
    return data


def test_every_region_resolves_s3_and_sts_as_with_the_full_data() -> None:
    full = _full_endpoints()
    slim = slim_endpoints(copy.deepcopy(full))
    assert len(json.dumps(slim)) < len(json.dumps(full)) / 5
    full_r, slim_r = EndpointResolver(full), EndpointResolver(slim)
    regions = [r for p in full["partitions"] for r in p["regions"]]
    assert len(regions) > 20
    for service in sorted(ENDPOINT_SERVICES):
        for region in [*regions, "aws-global", "nowhere-1"]:
            assert slim_r.construct_endpoint(service, region) == full_r.construct_endpoint(
                service, region
            ), (service, region)
    assert slim_r.get_available_partitions() == full_r.get_available_partitions()


def test_the_s3_model_loses_its_documentation_text_only() -> None:
    full, _path = Loader().load_data_with_path("s3/2006-03-01/service-2")
    slim = without_documentation(copy.deepcopy(full))

    def no_docs(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: "" if k == "documentation" and isinstance(v, str) else no_docs(v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [no_docs(v) for v in node]
        return node

    assert slim == no_docs(full)
    assert set(slim["operations"]) == set(full["operations"])
    assert len(json.dumps(slim)) < len(json.dumps(full)) / 2


class Captured(Exception):
    """Raised where the request would be sent: nothing leaves the test."""


def _sent(session: Any, endpoint: str | None, region: str) -> list[dict[str, Any]]:
    """What a client of ``session`` would send for a few calls (nothing is sent)."""
    from botocore.config import Config

    client = boto3.session.Session(botocore_session=session).client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    requests: list[dict[str, Any]] = []

    def capture(request: Any, **_kwargs: Any) -> Any:
        headers = {
            k: v
            for k, v in request.headers.items()
            if k not in ("Authorization", "X-Amz-Date", "User-Agent", "amz-sdk-invocation-id")
        }
        auth = request.headers.get("Authorization", b"")
        scope = auth.split(b"Credential=")[1].split(b",")[0].split(b"/", 2)[2] if auth else b""
        requests.append(
            {"url": request.url, "method": request.method, "headers": headers, "scope": scope}
        )
        raise Captured

    client.meta.events.register("before-send", capture)
    for call in (
        lambda: client.put_object(
            Bucket="bucket", Key="car/a.gz", Body=b"x", ContentMD5="dGVzdA=="
        ),
        lambda: client.head_object(Bucket="bucket", Key="car/a.gz"),
        lambda: client.list_objects_v2(Bucket="bucket", Prefix="car/"),
    ):
        with pytest.raises(Captured):
            call()
    return requests


@pytest.mark.parametrize(
    ("endpoint", "region"),
    [
        ("http://127.0.0.1:8333", "us-east-1"),
        ("https://s3.example.net:9000", "eu-central-1"),
        (None, "eu-west-3"),
        (None, "us-east-1"),
        (None, "cn-north-1"),
    ],
)
def test_a_slim_client_sends_what_a_full_one_does(endpoint: str | None, region: str) -> None:
    full = _sent(botocore.session.get_session(), endpoint, region)
    slim = _sent(slim_session(), endpoint, region)
    assert len(full) == 3
    assert slim == full
