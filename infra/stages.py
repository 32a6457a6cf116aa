"""A stage's settings as its deployed functions see them: .chalice/config.json's variables."""
from __future__ import annotations

import json
import os
from pathlib import Path

from chalicelib.config import PROJECT_ROOT, Settings

from .definitions import ProvisionError

CONFIG_PATH = PROJECT_ROOT / ".chalice" / "config.json"


def stage_environment(stage: str, config_path: Path | str = CONFIG_PATH) -> dict[str, str]:
    """The environment variables Chalice gives ``stage``'s functions (global, then stage values)."""
    config = json.loads(Path(config_path).read_text())
    stages = config.get("stages", {})
    if stage not in stages:
        raise ProvisionError(f"stage {stage!r} is not in {config_path} (have: {', '.join(sorted(stages))})")
    env = dict(config.get("environment_variables", {}))
    env.update(stages[stage].get("environment_variables", {}))
    return {k: str(v) for k, v in env.items()}


def stage_settings(stage: str, config_path: Path | str = CONFIG_PATH, region: str | None = None) -> Settings:
    """Settings as the deployed functions of ``stage`` will see them."""
    env = stage_environment(stage, config_path)
    if region:
        env["AWS_REGION"] = region
    return Settings.from_env(env)


def resolve_region(explicit: str | None = None) -> str:
    """``explicit``, else the environment, else the AWS config (profile); ProvisionError if none."""
    region = explicit or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        try:
            import boto3

            region = boto3.session.Session().region_name
        except Exception:  # noqa: BLE001 - any failure here means "no region"
            region = None
    if not region:
        raise ProvisionError(
            "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), or `aws configure set region ...`"
        )
    return region
