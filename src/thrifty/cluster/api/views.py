"""What the `/jobs` routes answer, as models for the OpenAPI document.

The routes build these bodies as plain dicts (`common.show`, a page's time halves without the
generic encoder), so the models document them without filtering them; both allow more fields
than they list, which a client should ignore.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class JobSummary(BaseModel):
    """A job as tables and lists show it."""

    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    owner: str
    team: str
    state: str = Field(description="queued, running, restarting, succeeded, failed or "
                                   "cancelled.")
    priority: int
    submitted_at: float = Field(description="Unix time, seconds.")
    started_at: float | None
    finished_at: float | None
    jct_s: float = Field(description="Seconds from submission to the end (or to now).")
    allocation: dict[str, Any] | None = Field(description="GPU kind and GPUs per node held.")
    replicas: int
    restarts: int
    failures: int
    replica_seconds: float
    batch_size: int | None
    epoch: int | None
    step: int | None
    goodput: float | None = Field(description="Samples/s × statistical efficiency, as the "
                                              "job's own model predicts on its allocation.")
    message: str
    cancel_requested: bool
    reason: str = Field(description="Why the job waits, or how it runs or ended.")
    last_decision: dict[str, Any] | None = Field(
        description="The last round's decision: `proposed` (the policy's allocation or null) "
                    "and `granted` (after quotas and budgets).")


class JobPage(BaseModel):
    jobs: list[JobSummary]
    total: int = Field(description="How many match, over all pages.")
    limit: int
    offset: int


class JobEvent(BaseModel):
    at: float
    kind: str
    message: str


class JobAttempt(BaseModel):
    number: int
    allocation: dict[str, Any]
    started_at: float
    ended_at: float | None
    exit_codes: list[int | None] | None
    outcome: str | None


class JobDetail(JobSummary):
    """A job with its spec, its events and every attempt."""

    spec: dict[str, Any]
    events: list[JobEvent]
    attempts: list[JobAttempt]
    log_tail: str | None = Field(description="A failed job's last log lines; null otherwise.")


class RankLog(BaseModel):
    rank: int
    file: str
    start: int = Field(description="Byte offset of `text` in the file.")
    end: int = Field(description="Byte offset after `text`: the `offset` to follow on from.")
    clipped: bool = Field(description="The tail asked for was longer than one response.")
    more: bool = Field(description="The file goes on after `end`.")
    text: str


class JobLogs(BaseModel):
    job_id: str
    state: str
    attempt: int | None = Field(description="The attempt shown; null before the first.")
    attempts: int
    ranks: list[RankLog]
