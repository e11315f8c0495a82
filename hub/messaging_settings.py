"""The `[messaging]` settings: which sender the SMS channel uses, the outbox worker's pace and caps."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["AliyunSmsSettings", "MessagingSettings"]


class AliyunSmsSettings(BaseModel):
    """Aliyun SMS (dysmsapi): keys, the approved signature, and our template names → Aliyun template codes."""

    model_config = ConfigDict(extra="forbid")

    access_key_id: str = Field(min_length=1)
    access_key_secret: str = Field(min_length=1, repr=False)
    sign_name: str = Field(min_length=1, description="the approved SMS signature (签名), e.g. 某某便利店")
    templates: dict[str, str] = Field(
        default_factory=dict, description='our template name → Aliyun TemplateCode, e.g. {promo = "SMS_1234"}'
    )
    endpoint: str = "https://dysmsapi.aliyuncs.com/"
    region_id: str = "cn-hangzhou"
    timeout_s: float = Field(10.0, gt=0, le=60)


class MessagingSettings(BaseModel):
    """The outbox worker in `storelink-hub run`: sender, pace, marketing frequency cap, retries."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="run the outbox worker (campaign sends, group-buy expiry, messages)"
    )
    sms_sender: Literal["log", "aliyun"] = Field("log", description="log: write messages to the log (demo)")
    interval_s: float = Field(5.0, ge=0.5, le=300)
    marketing_cap: int = Field(3, ge=1, le=100, description="marketing messages per member per cap_days")
    cap_days: int = Field(7, ge=1, le=90)
    max_attempts: int = Field(6, ge=1, le=50)
    aliyun: AliyunSmsSettings | None = None

    @model_validator(mode="after")
    def _aliyun_configured(self) -> MessagingSettings:
        if self.sms_sender == "aliyun" and self.aliyun is None:
            raise ValueError(
                "messaging.sms_sender = 'aliyun' needs a [messaging.aliyun] section with its keys"
            )
        return self
