"""The settings file as a resource, so every asset reads the same validated configuration."""

import dagster as dg
from pydantic import Field

from stage2_assets.config import Settings, load_settings


class Stage2Settings(dg.ConfigurableResource):
    """Points at ``config/adaptation.yaml`` (or ``STAGE2_CONFIG``); validated when read."""

    config_file: str = Field(description="The adaptation settings file this code location runs on.")

    def get(self) -> Settings:
        return load_settings(self.config_file)
