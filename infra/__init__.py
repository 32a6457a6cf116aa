"""The service's AWS resources, defined once (``definitions``) and rendered three ways:

* ``provision``: create or converge them through boto3 (moto for the local stack and the tests, a
  real account on the `make deploy` path: ``python -m audio_stitch provision``);
* ``cloudformation``: a template fragment that ``chalice package --merge-template`` merges into
  the generated SAM template;
* ``iam``: one least-privilege policy per function.

The committed ``.chalice/resources-<stage>.json`` and ``.chalice/policy-<stage>-<function>.json``
are the rendered output (``python scripts/deploy.py render``); a unit test fails when they drift.
``chalice_guard`` is what the bare Chalice commands run (app.py calls it under the Chalice CLI).
"""
from __future__ import annotations

from .cloudformation import cloudformation_template
from .definitions import (
    API_EPHEMERAL_MB,
    API_FUNCTION,
    API_FUNCTION_ID,
    APP_NAME,
    FUNCTIONS,
    LAMBDA_RUNTIME,
    PUBLIC_ACCESS_BLOCK,
    SWEEPER_FUNCTION,
    UPLOAD_CORS_RULES,
    WORKER_EPHEMERAL_MB,
    WORKER_FUNCTION,
    WORKER_FUNCTION_ID,
    ProvisionError,
    function_name,
    stage_resources,
    visibility_timeout,
)
from .iam import iam_policies, policy_file
from .provision import ensure_resources, ensure_table, main
from .stages import CONFIG_PATH, resolve_region, stage_environment, stage_settings

__all__ = [
    "API_EPHEMERAL_MB", "API_FUNCTION", "API_FUNCTION_ID", "FUNCTIONS", "SWEEPER_FUNCTION", "APP_NAME", "CONFIG_PATH", "LAMBDA_RUNTIME",
    "PUBLIC_ACCESS_BLOCK", "UPLOAD_CORS_RULES", "WORKER_EPHEMERAL_MB", "WORKER_FUNCTION", "WORKER_FUNCTION_ID", "ProvisionError",
    "cloudformation_template", "ensure_resources", "ensure_table", "function_name", "iam_policies", "main",
    "policy_file", "resolve_region", "stage_environment", "stage_resources", "stage_settings",
    "visibility_timeout",
]
