"""Aliyun SMS (阿里云短信, dysmsapi `SendSms`) as a `Sender`, signed as Aliyun's RPC API signature v1 asks.

The signature (SignatureMethod HMAC-SHA1, SignatureVersion 1.0): percent-encode every
parameter name and value (RFC 3986: only A-Z a-z 0-9 - _ . ~ stay as they are, a space is
%20), sort by name, join as `k=v&k=v`; the string to sign is
`METHOD & percent("/") & percent(that query)`; the key is the AccessKey secret plus "&";
the signature is the Base64 of the HMAC-SHA1. The pure `sign` is tested against the example
in Aliyun's documentation; the sender is tested against a local fake of the API.

Refusals: flow control and server errors are worth retrying later, and so are key or
signature errors (fixing the configuration should let queued messages go); a refusal about
the message itself (bad number, missing template parameter, blacklisted) is final.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

from hub.messaging import OutgoingMessage, SendFailed, SendReceipt
from hub.messaging_settings import AliyunSmsSettings

__all__ = ["AliyunSmsSender", "percent_encode", "sign", "signed_params"]

log = logging.getLogger(__name__)

_RETRYABLE = frozenset(
    {
        "isv.BUSINESS_LIMIT_CONTROL",  # per-number flow control (1/min, 5/h, 10/day by default)
        "Throttling.User",
        "Throttling",
        "ServiceUnavailable",
        "InternalError",
        "isp.SYSTEM_ERROR",
        "isv.OUT_OF_SERVICE",  # account in arrears: pays and resumes
        "isv.AMOUNT_NOT_ENOUGH",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId.NotFound",
        "InvalidTimeStamp.Expired",
        "SignatureNonceUsed",
    }
)


def percent_encode(text: str) -> str:
    """RFC 3986 percent-encoding of UTF-8 text, as Aliyun's signature wants it."""
    return quote(text, safe="-_.~")


def sign(method: str, params: Mapping[str, str], secret: str) -> str:
    """The Base64 HMAC-SHA1 signature of `params` (without `Signature`) for an HTTP `method`."""
    query = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()))
    to_sign = f"{method.upper()}&{percent_encode('/')}&{percent_encode(query)}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signed_params(
    settings: AliyunSmsSettings,
    action_params: Mapping[str, str],
    *,
    method: str = "POST",
    now: datetime | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The common parameters, the action's, and their `Signature`."""
    params = {
        "AccessKeyId": settings.access_key_id,
        "Format": "JSON",
        "RegionId": settings.region_id,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": nonce or uuid.uuid4().hex,
        "SignatureVersion": "1.0",
        "Timestamp": (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "Version": "2017-05-25",
        **action_params,
    }
    params["Signature"] = sign(method, params, settings.access_key_secret)
    return params


class AliyunSmsSender:
    """The `sms` channel through Aliyun; an async context manager owning its HTTP session if not given one."""

    def __init__(self, settings: AliyunSmsSettings, *, http: aiohttp.ClientSession | None = None):
        self.settings = settings
        self._http = http
        self._owns_http = http is None

    async def __aenter__(self) -> AliyunSmsSender:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._owns_http and self._http is not None:
            await self._http.close()
            self._http = None

    def _action(self, message: OutgoingMessage) -> dict[str, str]:
        code = self.settings.templates.get(message.template)
        if code is None:
            raise SendFailed(
                f"no Aliyun template code is configured for template {message.template!r} "
                "(messaging.aliyun.templates)",
                retryable=False,
            )
        return {
            "Action": "SendSms",
            "PhoneNumbers": message.recipient,
            "SignName": self.settings.sign_name,
            "TemplateCode": code,
            "TemplateParam": json.dumps(dict(message.params), ensure_ascii=False, separators=(",", ":")),
            "OutId": message.id,
        }

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        """POST one SendSms request; the BizId is the provider reference."""
        if self._http is None:
            raise RuntimeError("AliyunSmsSender is used outside its `async with`")
        form = signed_params(self.settings, self._action(message))
        try:
            async with self._http.post(
                self.settings.endpoint,
                data=form,
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
            ) as response:
                status = response.status
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as err:
            raise SendFailed(f"Aliyun SMS unreachable: {err or type(err).__name__}", retryable=True) from err
        body = _json(text) or {}
        code = str(body.get("Code", ""))
        if status == 200 and code == "OK":
            return SendReceipt(provider_ref=str(body.get("BizId") or body.get("RequestId") or ""))
        detail = f"{code or f'HTTP {status}'}: {str(body.get('Message', text[:200]))[:200]}"
        retryable = code in _RETRYABLE or status >= 500 or (not code and status in {408, 429})
        raise SendFailed(f"Aliyun SMS refused message {message.id}: {detail}", retryable=retryable)


def _json(text: str) -> dict[str, Any] | None:
    try:
        body = json.loads(text)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
