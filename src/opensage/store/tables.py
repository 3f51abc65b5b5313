"""SQLAlchemy table definitions (the schema the migrations create)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_name)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class MetaRow(Base):
    __tablename__ = "platform_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class AccessKeyRow(Base):
    __tablename__ = "access_keys"
    access_key_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    principal_arn: Mapped[str] = mapped_column(String(2048))
    user_id: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class ResourceRow(Base):
    __tablename__ = "resources"
    __table_args__ = (
        UniqueConstraint("kind", "name", name="uq_resources_kind_name"),
        Index("ix_resources_kind_created", "kind", "created_at"),
        Index("ix_resources_kind_status", "kind", "status"),
        Index("ix_resources_parent", "parent_arn"),
    )
    arn: Mapped[str] = mapped_column(String(2048), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    data: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=1)  # +1 on every write: compare-and-set on the document
    parent_arn: Mapped[str | None] = mapped_column(String(2048), nullable=True)  # tuning job -> its training jobs


class MetricRow(Base):
    """One minute of one metric series (namespace, name, dimensions as sorted JSON): a statistic set."""

    __tablename__ = "metric_data"
    __table_args__ = (Index("ix_metric_data_minute", "minute"),)
    namespace: Mapped[str] = mapped_column(String(256), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    dimensions: Mapped[str] = mapped_column(String(2048), primary_key=True)
    minute: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    unit: Mapped[str] = mapped_column(String(32))
    sample_count: Mapped[float] = mapped_column(Float)
    total: Mapped[float] = mapped_column(Float)
    minimum: Mapped[float] = mapped_column(Float)
    maximum: Mapped[float] = mapped_column(Float)


class TrialMetricRow(Base):
    """One value a run logged (SageMaker Experiments' BatchPutMetrics): trial component, metric, time, step."""

    __tablename__ = "trial_metrics"
    __table_args__ = (Index("ix_trial_metrics_component", "trial_component", "metric_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trial_component: Mapped[str] = mapped_column(String(256))
    metric_name: Mapped[str] = mapped_column(String(256))
    timestamp: Mapped[float] = mapped_column(Float)
    step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    value: Mapped[float] = mapped_column(Float)
