"""Request and response models of the scoring API."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from shared.api import IsoDate


class Purchases(BaseModel):
    first_purchase_at: datetime
    last_purchase_at: datetime
    orders: int
    distinct_purchase_days: int
    repeat_purchases: int
    revenue_total: float
    mean_repeat_spend: float


class Rfm(BaseModel):
    recency_days: int
    frequency: int
    monetary: float
    r: int
    f: int
    m: int
    segment: str


class CustomerValue(BaseModel):
    model_status: str  # fitted | not_fitted (no successful fit yet) | no_purchases
    model_fitted_at: datetime | None
    horizon_days: int
    historical_value: float
    p_alive: float | None
    expected_purchases: float | None
    expected_spend: float | None
    predicted_clv: float | None


class CustomerScores(BaseModel):
    customer_id: str
    as_of: date
    first_seen: datetime
    last_seen: datetime
    event_count: int
    last_channel: str
    purchases: Purchases | None
    rfm: Rfm | None
    value: CustomerValue


class BgNbdParams(BaseModel):
    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float


class GammaGammaParams(BaseModel):
    p: float
    q: float
    gamma: float
    log_likelihood: float


class FitAttempt(BaseModel):
    status: str  # fitted | failed
    observation_end: date
    fitted_at: datetime
    fit_seconds: float
    n_customers: int
    n_repeat_buyers: int
    data_from: date | None
    error: str | None = Field(description="why the fit failed; null if it did not")


class ModelInfo(FitAttempt):
    """The model in use (the newest successful fit; else the newest attempt) and the newest
    attempt, which may have failed."""

    time_unit: str = "week"
    bgnbd: BgNbdParams | None
    gamma_gamma: GammaGammaParams | None
    boundary: list[str] = Field(
        description="limits the fit reached, e.g. 'r,alpha -> inf': no heterogeneity in the "
        "purchase rate; the model predicts as that limit"
    )
    last_attempt: FitAttempt | None = None


class TrackingWeek(BaseModel):
    start: date
    actual: int = Field(description="repeat purchases (distinct days) that week")
    predicted: float
    cumulative_actual: int
    cumulative_predicted: float


class HoldoutGroup(BaseModel):
    label: str = Field(description="calibration repeat purchases (7+ for the last), or channel")
    customers: int
    actual: float = Field(description="mean holdout purchases per customer")
    predicted: float


class ValidationReport(BaseModel):
    time_unit: str = "week"
    calibration_end: date
    holdout_end: date
    holdout_weeks: float
    bgnbd: BgNbdParams = Field(description="fitted on the calibration period")
    boundary: list[str]
    customers: int = Field(description="customers whose first purchase is in the calibration")
    calibration_repeat_purchases: int
    holdout_actual: int
    holdout_predicted: float
    weekly_mae: float = Field(description="mean |actual - predicted| per holdout week")
    customer_mae: float = Field(description="mean |actual - predicted| holdout purchases")
    weeks: list[TrackingWeek]
    by_repeat_purchases: list[HoldoutGroup]
    by_channel: list[HoldoutGroup]


class RefitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    observation_end: IsoDate | None = Field(default=None, description="YYYY-MM-DD")


class Segments(BaseModel):
    as_of: date
    scored_customers: int
    segments: dict[str, int]


class ChannelValue(BaseModel):
    channel: str = Field(description="first-touch (acquisition) channel of the customer id")
    customers: int
    buyers: int
    historical_value: float = Field(description="net revenue so far")
    expected_purchases: float | None = Field(description="over the horizon; null: no model")
    predicted_clv: float | None = Field(description="over the horizon; null: no model")


class ValueByChannel(BaseModel):
    as_of: date
    horizon_days: int
    model_status: str = Field(description="fitted or not_fitted")
    channels: list[ChannelValue]
