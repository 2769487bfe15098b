"""botocore's data files, trimmed to what the uploader's one S3 client uses.

botocore loads endpoints.json (every AWS service in every region: some 7 MB of Python
objects) to build a client of any service, and S3's service model with its documentation
(four fifths of the file, for docstrings only); the client keeps both for its lifetime.
On a Pi that was about half of what the uploader costs in RSS. What the client resolves
is unchanged: every partition and region is kept, with the endpoints of S3 and of the
services boto3's credential providers may call (STS, SSO); every model field but the
documentation text is kept.
"""

from __future__ import annotations

import os
from typing import Any

from botocore.loaders import JSONFileLoader, Loader
from botocore.session import Session

# S3 itself, and the clients of boto3's credential chain (assume-role, web identity, SSO).
ENDPOINT_SERVICES = frozenset({"s3", "sts", "sso", "sso-oidc"})


def slim_endpoints(data: Any) -> Any:
    """endpoints.json with only ENDPOINT_SERVICES in each partition's services."""
    for partition in data.get("partitions", []):
        services = partition.get("services")
        if isinstance(services, dict):
            for name in [n for n in services if n not in ENDPOINT_SERVICES]:
                del services[name]
    return data


def without_documentation(node: Any) -> Any:
    """A model whose documentation strings are empty (in place; the keys stay: botocore
    reads some). Only a text value is documentation: a member or shape that happened to
    be named so maps to a dict."""
    if isinstance(node, dict):
        if isinstance(node.get("documentation"), str):
            node["documentation"] = ""
        for value in node.values():
            without_documentation(value)
    elif isinstance(node, list):
        for value in node:
            without_documentation(value)
    return node


class SlimFileLoader(JSONFileLoader):  # type: ignore[misc]
    """botocore's JSON loader, trimming endpoints and service models as they load (so that
    the loader's own cache keeps the trimmed ones only)."""

    def load_file(self, file_path: str) -> Any:
        data = super().load_file(file_path)
        if data is None:
            return None
        name = os.path.basename(file_path)
        if name == "endpoints":
            return slim_endpoints(data)
        if name == "service-2":
            return without_documentation(data)
        return data


def slim_session() -> Session:
    """A botocore session whose data loader is botocore's, with the slim file loader: the
    same search path (AWS_DATA_PATH, ~/.aws/models, botocore's own data)."""
    import botocore.session

    session = botocore.session.get_session()
    data_path = session.get_config_variable("data_path")
    extra = None
    if data_path is not None:
        extra = [os.path.expanduser(os.path.expandvars(p)) for p in data_path.split(os.pathsep)]
    session.register_component(
        "data_loader", Loader(extra_search_paths=extra, file_loader=SlimFileLoader())
    )
    return session
