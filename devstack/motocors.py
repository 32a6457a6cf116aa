"""moto's S3 answers a presigned POST form (how the web page uploads) without the bucket's CORS
headers, where S3 sends them; a browser then reports the upload as failed although it was stored.
This WSGI wrapper adds them to that one kind of answer, from the bucket's own rules as moto holds
them, so the local stack behaves as S3 does. Everything else passes through untouched."""
from __future__ import annotations


def _allow_headers(bucket_name: str, origin: str) -> list[tuple[str, str]]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.exceptions import MissingBucket
    from moto.s3.models import s3_backends
    from moto.s3.utils import cors_matches_origin

    try:
        bucket = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].get_bucket(bucket_name)
    except MissingBucket:
        return []
    for rule in bucket.cors:
        if "POST" in (rule.allowed_methods or []) and cors_matches_origin(origin, rule.allowed_origins or []):
            headers = [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
            if rule.exposed_headers:
                headers.append(("Access-Control-Expose-Headers", ", ".join(rule.exposed_headers)))
            return headers
    return []


class FormPostCors:
    """Wraps moto's WSGI app: a browser's form POST to a bucket gets the bucket's CORS answer."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        origin = environ.get("HTTP_ORIGIN")
        if (not origin or environ.get("REQUEST_METHOD") != "POST"
                or not environ.get("CONTENT_TYPE", "").startswith("multipart/form-data")):
            return self.app(environ, start_response)
        bucket = environ.get("PATH_INFO", "").lstrip("/").split("/", 1)[0]

        def start(status, headers, exc_info=None):
            if not any(name.lower() == "access-control-allow-origin" for name, _ in headers):
                headers = [*headers, *_allow_headers(bucket, origin)]
            return start_response(status, headers, exc_info)

        return self.app(environ, start)
