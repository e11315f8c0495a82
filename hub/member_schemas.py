"""Bodies of the members API, apart from the routes so the OpenAPI document can list them."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hub.members import check_birthday, check_name, normalize_phone, parse_gender

__all__ = [
    "MEMBER_MODELS",
    "BirthdayItem",
    "BirthdayPage",
    "ImportReportOut",
    "MemberCodeOut",
    "MemberIn",
    "MemberOut",
    "MemberPage",
    "MemberPatch",
    "MergeIn",
    "RowErrorOut",
]


class MemberOut(BaseModel):
    """A member as head office sees it (full phone)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    phone: str | None
    name: str
    gender: str
    birthday: date | None
    source_store: str | None
    referrer_id: str | None
    channel: str
    consent_marketing: bool
    consent_sms: bool
    merged_into: str | None
    released_phone: str | None
    created_at: datetime
    updated_at: datetime


class _Fields(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("phone", check_fields=False)
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        return None if value is None else normalize_phone(value)

    @field_validator("name", check_fields=False)
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value)

    @field_validator("gender", check_fields=False)
    @classmethod
    def _gender(cls, value: str | None) -> str | None:
        return None if value is None else parse_gender(value).value

    @field_validator("birthday", check_fields=False)
    @classmethod
    def _birthday(cls, value: date | None) -> date | None:
        return check_birthday(value)


class MemberIn(_Fields):
    """A new member; `source_store` defaults to the user's store when they have exactly one."""

    phone: str = Field(max_length=32)
    name: str = Field("", max_length=200)
    gender: str = "unknown"
    birthday: date | None = None
    source_store: str | None = None
    referrer_id: str | None = None
    consent_marketing: bool = False
    consent_sms: bool = False


class MemberPatch(_Fields):
    """Fields to change; those left out stay as they are (`birthday: null` clears it)."""

    phone: str | None = Field(None, max_length=32)
    name: str | None = Field(None, max_length=200)
    gender: str | None = None
    birthday: date | None = None
    consent_marketing: bool | None = None
    consent_sms: bool | None = None


class MergeIn(BaseModel):
    """Merge the member in the path into `into`; `take_phone` gives the survivor the merged phone."""

    model_config = ConfigDict(extra="forbid")

    into: str = Field(min_length=1, max_length=36)
    take_phone: bool = False


class MemberPage(BaseModel):
    """A page of a search; pass `next` as `offset` for the following page."""

    items: list[MemberOut]
    next: int | None


class BirthdayItem(MemberOut):
    """A member in the birthday list and when the birthday is celebrated."""

    next_birthday: date
    turns: int
    days_until: int


class BirthdayPage(BaseModel):
    """Birthdays from `from` for `days` days, in the order the days come."""

    model_config = ConfigDict(populate_by_name=True)

    from_: date = Field(alias="from")
    days: int
    items: list[BirthdayItem]
    next: int | None


class MemberCodeOut(BaseModel):
    """A checkout code: show it until `refresh_at`; refused after `expires_at` or once used."""

    member_id: str
    code: str = Field(pattern=r"^96\d{16}$")
    qr: str
    refresh_at: datetime
    expires_at: datetime


class RowErrorOut(BaseModel):
    """One problem of an import: the sheet's row (header is row 1), the column as headed, what is wrong."""

    row: int
    column: str
    message: str


class ImportReportOut(BaseModel):
    """What an import found and did."""

    rows: int
    valid: int
    imported: int
    skipped: int
    written: bool
    errors: list[RowErrorOut]
    ignored_columns: list[str]


MEMBER_MODELS: list[type[BaseModel]] = [
    MemberIn,
    MemberOut,
    MemberPage,
    MemberPatch,
    MergeIn,
    BirthdayPage,
    MemberCodeOut,
    ImportReportOut,
]
