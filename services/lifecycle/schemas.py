"""Request and response models of the lifecycle API: customers, journeys, stages and the
conversion reports."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from shared.events import CHANNELS


class Counters(BaseModel):
    events: int
    orders: int
    revenue: float


class Customer(BaseModel):
    customer_id: str
    known: bool = Field(description="identified by a userId")
    ids: list[str] = Field(description="every id merged into this customer")
    stage: str
    stage_entered_at: datetime
    status: str = Field(description="active, at_risk or lapsed as of `as_of`")
    first_touch_channel: str
    first_touch_at: datetime
    last_touch_at: datetime
    last_order_at: datetime | None
    counters: Counters
    as_of: datetime


class PathTouch(BaseModel):
    at: datetime
    channel: str


class JourneyStep(BaseModel):
    id: str
    kind: str = Field(description="stage, reactivated (a win-back) or reset (by an admin)")
    from_stage: str | None
    to_stage: str
    at: datetime
    channel: str | None
    message_id: str | None
    touch_path: list[PathTouch]
    recorded_at: datetime
    note: str | None


class Journey(BaseModel):
    customer_id: str
    ids: list[str]
    transitions: list[JourneyStep]


class StageCount(BaseModel):
    stage: str
    customers: int = Field(description="customers in this stage now")
    entered: int = Field(description="entries into this stage between since and until")


class Stages(BaseModel):
    as_of: datetime
    since: datetime | None
    until: datetime | None
    stages: list[StageCount]
    statuses: dict[str, int]


class ResetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str
    note: str | None = Field(default=None, max_length=2000)


class ChannelRow(BaseModel):
    channel: str = Field(description=f"{', '.join(CHANNELS)}; `total` for all")
    entered: int = Field(description="customers who entered `from` in the window")
    converted: int = Field(description="of them, customers who entered `to` since")
    rate: float | None = Field(description="converted / entered (null when none entered)")
    median_seconds: float | None = Field(description="median time from `from` to `to`")
    p90_seconds: float | None = Field(description="90th percentile (nearest rank)")
    credited_conversions: float = Field(description="conversions credited to touches here")
    credited_revenue: float = Field(description="credit x the converting order's amount")


class ConversionReport(BaseModel):
    from_stage: str
    to_stage: str
    model: str
    lookback_days: float
    since: datetime
    until: datetime
    channels: list[ChannelRow]
    total: ChannelRow
    unattributed: float = Field(description="conversions with no touch in the lookback window")


class Funnel(BaseModel):
    model: str
    lookback_days: float
    since: datetime
    until: datetime
    steps: list[ConversionReport]


class CohortRow(BaseModel):
    week: str = Field(description="Monday (UTC) of the week of the customers' first touch")
    channel: str = Field(description="first-touch (acquisition) channel")
    acquired: int
    reached: dict[str, int] = Field(description="customers of the cohort who entered each stage")


class Cohorts(BaseModel):
    since: datetime
    until: datetime
    stages: list[str]
    cohorts: list[CohortRow]
