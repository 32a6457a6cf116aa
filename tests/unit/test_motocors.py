"""The local stack's moto answers a browser's presigned POST form with the bucket's CORS headers,
as S3 does (moto alone sends none), and only where the bucket's rule allows the origin."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# In a fresh interpreter: MOTO_DISABLE_GLOBAL_CORS is read when moto is first imported.
SCRIPT = """\
import json, urllib.request, uuid, boto3
from devstack.stack import MotoServer
from infra.definitions import UPLOAD_CORS_RULES
m = MotoServer("127.0.0.1", 0)
s3 = boto3.client("s3", endpoint_url=m.url, region_name="us-east-1", aws_access_key_id="t",
                  aws_secret_access_key="t")
s3.create_bucket(Bucket="with-rule")
s3.put_bucket_cors(Bucket="with-rule", CORSConfiguration={"CORSRules": UPLOAD_CORS_RULES})
s3.create_bucket(Bucket="no-rule")
out = {}
for bucket in ("with-rule", "no-rule"):
    post = s3.generate_presigned_post(bucket, "k.mp3", Conditions=[["content-length-range", 1, 1000]])
    boundary = uuid.uuid4().hex
    body = b"".join(f'--{boundary}\\r\\nContent-Disposition: form-data; name="{k}"\\r\\n\\r\\n{v}\\r\\n'.encode()
                    for k, v in post["fields"].items())
    body += (f'--{boundary}\\r\\nContent-Disposition: form-data; name="file"; filename="k.mp3"\\r\\n\\r\\nabc\\r\\n'
             f'--{boundary}--\\r\\n').encode()
    req = urllib.request.Request(post["url"], data=body, method="POST", headers={
        "Origin": "http://page.test", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req) as r:
        stored = s3.head_object(Bucket=bucket, Key="k.mp3")["ContentLength"]
        out[bucket] = [r.status, r.headers.get("Access-Control-Allow-Origin"), stored]
m.stop()
print(json.dumps(out))
"""


def test_form_post_gets_the_bucket_rule_cors_headers():
    env = {**os.environ, "MOTO_DISABLE_GLOBAL_CORS": "true", "AWS_EC2_METADATA_DISABLED": "true"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["with-rule"] == [204, "http://page.test", 3]
    assert out["no-rule"] == [204, None, 3]  # stored, but a browser may not read the answer
