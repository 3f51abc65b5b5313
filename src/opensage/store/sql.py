"""The metadata store on SQLAlchemy: SQLite (WAL) by default, PostgreSQL by URL.

Secret access keys are kept encrypted (Fernet) with a key file that lives in the platform home,
never in the database, so a copy of the database alone reveals no secret.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Engine, and_, create_engine, event, func, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from opensage.errors import AlreadyExists, Conflict, NotFound, OpenSageError
from opensage.store.entities import AccessKey, Resource
from opensage.store.tables import AccessKeyRow, MetaRow, ResourceRow

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


class StoreError(OpenSageError):
    """The database cannot be used (unreachable, foreign, newer schema, wrong master key)."""


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def load_master_key(path: Path) -> Fernet:
    """Read (or create, 0600) the key that encrypts secret access keys."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())
    try:
        return Fernet(path.read_bytes().strip())
    except ValueError as exc:
        raise StoreError(f"{path} is not a valid key file; restore it from a backup or move the home aside.") from exc


class SqlStore:
    """Platform metadata, access keys and API resources in one SQL database."""

    def __init__(self, url: str, master_key: Fernet) -> None:
        self.url = url
        self._fernet = master_key
        self.engine = self._create_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # told of every resource created (before None) or changed through modify_resource, after the write;
        # they must be quick and not raise (the event bus only queues the change)
        self.watchers: list[Callable[[Resource | None, Resource], None]] = []

    @staticmethod
    def _create_engine(url: str) -> Engine:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            return engine
        return create_engine(url, pool_pre_ping=True)

    # --- schema -------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the newest revision; refuse a database from a newer OpenSage."""
        cfg = _alembic_config()
        heads = set(ScriptDirectory.from_config(cfg).get_heads())
        known = {rev.revision for rev in ScriptDirectory.from_config(cfg).walk_revisions()}
        try:
            with self.engine.begin() as conn:
                current = set(MigrationContext.configure(conn).get_current_heads())
                unknown = current - known
                if unknown:
                    raise StoreError(
                        f"The database at {self._safe_url()} has schema revision {', '.join(sorted(unknown))}, "
                        "which this OpenSage does not know; upgrade OpenSage or point it at another database."
                    )
                if not current and self._has_foreign_tables(conn):
                    raise StoreError(
                        f"The database at {self._safe_url()} holds tables that are not OpenSage's; "
                        "point OPENSAGE_DATABASE_URL at an empty database."
                    )
                if current != heads:
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
        except DBAPIError as exc:
            raise StoreError(f"Cannot open the database at {self._safe_url()}: {exc.orig}") from exc

    @staticmethod
    def _has_foreign_tables(conn: Any) -> bool:
        from sqlalchemy import inspect

        return bool(set(inspect(conn).get_table_names()) - {"alembic_version"})

    def _safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            yield s

    # --- platform metadata ----------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self.session() as s:
            row = s.get(MetaRow, key)
            return row.value if row else None

    def set_meta_default(self, key: str, value: str) -> str:
        """Set ``key`` unless it is set already; returns the stored value."""
        try:
            with self.session() as s:
                row = s.get(MetaRow, key)
                if row is not None:
                    return row.value
                s.add(MetaRow(key=key, value=value))
                return value
        except IntegrityError:
            return self.get_meta(key) or value

    # --- secrets ----------------------------------------------------------------------------------

    def seal(self, secret: bytes) -> bytes:
        """Encrypt ``secret`` with the home's master key (for key material kept in resources)."""
        return self._fernet.encrypt(secret)

    def unseal(self, token: bytes) -> bytes:
        """Decrypt what :meth:`seal` returned.

        Raises:
            StoreError: the home's master key did not seal it.
        """
        try:
            return self._fernet.decrypt(token)
        except InvalidToken as exc:
            raise StoreError(
                "A secret cannot be decrypted: the home's master.key does not belong to this database."
            ) from exc

    # --- access keys ------------------------------------------------------------------------------

    def add_access_key(self, key: AccessKey) -> None:
        row = AccessKeyRow(
            access_key_id=key.access_key_id,
            secret_encrypted=self._fernet.encrypt(key.secret_access_key.encode()),
            principal_arn=key.principal_arn,
            user_id=key.user_id,
            status=key.status,
            description=key.description,
            created_at=key.created_at,
        )
        try:
            with self.session() as s:
                s.add(row)
        except IntegrityError as exc:
            raise AlreadyExists(f"Access key {key.access_key_id} exists already.") from exc

    def _key(self, row: AccessKeyRow) -> AccessKey:
        try:
            secret = self._fernet.decrypt(row.secret_encrypted).decode()
        except InvalidToken as exc:
            raise StoreError(
                "An access key cannot be decrypted: the home's master.key does not belong to this database."
            ) from exc
        return AccessKey(
            row.access_key_id,
            secret,
            row.principal_arn,
            row.user_id,
            row.status,
            _utc(row.created_at),
            row.description,
        )

    def get_access_key(self, access_key_id: str) -> AccessKey | None:
        with self.session() as s:
            row = s.get(AccessKeyRow, access_key_id)
            return self._key(row) if row is not None else None

    def list_access_keys(self) -> list[AccessKey]:
        with self.session() as s:
            rows = s.scalars(select(AccessKeyRow).order_by(AccessKeyRow.created_at)).all()
            return [self._key(r) for r in rows]

    def delete_access_key(self, access_key_id: str) -> None:
        with self.session() as s:
            row = s.get(AccessKeyRow, access_key_id)
            if row is None:
                raise NotFound(f"Access key {access_key_id} does not exist.")
            s.delete(row)

    # --- resources --------------------------------------------------------------------------------

    @staticmethod
    def _resource(row: ResourceRow) -> Resource:
        return Resource(
            row.kind,
            row.name,
            row.arn,
            row.status,
            _utc(row.created_at),
            _utc(row.updated_at),
            json.loads(row.data),
            row.version,
            row.parent_arn,
        )

    def create_resource(self, resource: Resource) -> Resource:
        row = ResourceRow(
            arn=resource.arn,
            kind=resource.kind,
            name=resource.name,
            status=resource.status,
            created_at=resource.created_at,
            updated_at=resource.updated_at,
            data=json.dumps(resource.data),
            version=1,
            parent_arn=resource.parent_arn,
        )
        try:
            with self.session() as s:
                s.add(row)
        except IntegrityError as exc:
            raise AlreadyExists(f"{resource.kind} {resource.name} already exists.") from exc
        created = self._resource(row)
        self._notify(None, created)
        return created

    def _notify(self, before: Resource | None, after: Resource) -> None:
        for watcher in self.watchers:
            try:
                watcher(before, after)
            except Exception:
                log.exception("a watcher of %s %s failed", after.kind, after.name)

    def get_resource(self, kind: str, name: str) -> Resource | None:
        with self.session() as s:
            row = s.scalars(select(ResourceRow).where(ResourceRow.kind == kind, ResourceRow.name == name)).first()
            return self._resource(row) if row is not None else None

    def list_resources(
        self,
        kind: str,
        *,
        name_contains: str | None = None,
        status: str | None = None,
        created_after: dt.datetime | None = None,
        created_before: dt.datetime | None = None,
        modified_after: dt.datetime | None = None,
        modified_before: dt.datetime | None = None,
        parent_arn: str | None = None,
        sort_by: str = "created_at",
        descending: bool = True,
        after: tuple[Any, str] | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[Resource]:
        """Resources of ``kind`` that match every filter given, sorted and paged in SQL.

        The order is ``sort_by`` (``created_at``, ``name`` or ``status``), then the name. ``after`` is
        the (``sort_by`` value, name) of the last row a caller has seen: only rows past it in this order
        are returned, so pages taken by key neither repeat nor skip rows when others are added meanwhile.
        """
        q = select(ResourceRow).where(ResourceRow.kind == kind)
        if parent_arn is not None:
            q = q.where(ResourceRow.parent_arn == parent_arn)
        if name_contains:
            q = q.where(ResourceRow.name.contains(name_contains, autoescape=True))
        if status:
            q = q.where(ResourceRow.status == status)
        if created_after:
            q = q.where(ResourceRow.created_at > created_after)
        if created_before:
            q = q.where(ResourceRow.created_at < created_before)
        if modified_after:
            q = q.where(ResourceRow.updated_at > modified_after)
        if modified_before:
            q = q.where(ResourceRow.updated_at < modified_before)
        column = {"name": ResourceRow.name, "status": ResourceRow.status}.get(sort_by, ResourceRow.created_at)
        if after is not None:
            value, name = after
            past = column < value if descending else column > value
            q = q.where(or_(past, and_(column == value, ResourceRow.name > name)))
        q = q.order_by(column.desc() if descending else column.asc(), ResourceRow.name)
        if offset:
            q = q.offset(offset)
        if limit is not None:
            q = q.limit(limit)
        with self.session() as s:
            return [self._resource(r) for r in s.scalars(q).all()]

    def count_resources(self, kind: str, *, parent_arn: str | None = None) -> dict[str, int]:
        """How many resources of ``kind`` (children of ``parent_arn`` when given) there are in each status."""
        q = select(ResourceRow.status, func.count()).where(ResourceRow.kind == kind)
        if parent_arn is not None:
            q = q.where(ResourceRow.parent_arn == parent_arn)
        with self.session() as s:
            return {str(status): int(n) for status, n in s.execute(q.group_by(ResourceRow.status)).all()}

    def update_resource(
        self,
        kind: str,
        name: str,
        *,
        data: dict[str, Any] | None = None,
        status: str | None = None,
        expect_status: str | tuple[str, ...] | None = None,
        expect_version: int | None = None,
        now: dt.datetime,
    ) -> Resource:
        """Compare-and-set update: fails with :class:`Conflict` when the status is not ``expect_status``
        or the document is no longer at ``expect_version`` (someone wrote it since it was read).

        One conditional ``UPDATE`` does the check and the write (and counts the version up), so
        concurrent writers have exactly one winner on every database. Writers that change part of a
        document use :meth:`modify_resource`, which re-reads and retries instead of failing.
        """
        allowed = (expect_status,) if isinstance(expect_status, str) else expect_status
        values: dict[str, Any] = {"updated_at": now, "version": ResourceRow.version + 1}
        if data is not None:
            values["data"] = json.dumps(data)
        if status is not None:
            values["status"] = status
        where = [ResourceRow.kind == kind, ResourceRow.name == name]
        if allowed is not None:
            where.append(ResourceRow.status.in_(allowed))
        if expect_version is not None:
            where.append(ResourceRow.version == expect_version)
        with self.session() as s:
            result = s.execute(update(ResourceRow).where(*where).values(**values))
            if result.rowcount == 0:  # type: ignore[attr-defined]
                row = s.scalars(select(ResourceRow).where(*where[:2])).first()
                if row is None:
                    raise NotFound(f"{kind} {name} does not exist.")
                if allowed is not None and row.status not in allowed:
                    raise Conflict(f"{kind} {name} is {row.status}, not {' or '.join(allowed)}.")
                raise Conflict(f"{kind} {name} was changed meanwhile (version {row.version}, not {expect_version}).")
            row = s.scalars(select(ResourceRow).where(*where[:2])).one()
            return self._resource(row)

    def modify_resource(
        self,
        kind: str,
        name: str,
        change: Callable[[Resource], tuple[dict[str, Any], str | None] | None],
        *,
        now: dt.datetime,
        attempts: int = 50,
    ) -> Resource:
        """Read-modify-write without lost updates: ``change(current)`` returns the new document and
        status (``None`` keeps the status), or ``None`` to write nothing; it may raise (e.g.
        :class:`Conflict` for a transition the current status does not allow), which aborts.

        The write is a compare-and-set on the version read; when another writer got in between,
        ``change`` runs again on what that writer stored.

        Raises:
            NotFound: no such resource. Conflict: ``change`` refused, or ``attempts`` were exhausted.
        """
        for _ in range(attempts):
            current = self.get_resource(kind, name)
            if current is None:
                raise NotFound(f"{kind} {name} does not exist.")
            changed = change(current)
            if changed is None:
                return current
            data, status = changed
            try:
                updated = self.update_resource(
                    kind, name, data=data, status=status, expect_version=current.version, now=now
                )
            except Conflict:
                continue
            self._notify(current, updated)
            return updated
        raise Conflict(f"{kind} {name} kept changing; gave up after {attempts} attempts.")

    def delete_resource(self, kind: str, name: str) -> None:
        with self.session() as s:
            row = s.scalars(select(ResourceRow).where(ResourceRow.kind == kind, ResourceRow.name == name)).first()
            if row is None:
                raise NotFound(f"{kind} {name} does not exist.")
            s.delete(row)


def open_store(url: str, master_key_path: Path) -> SqlStore:
    """Open the store at ``url`` and migrate it to the current schema."""
    if url.startswith("postgres"):
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise StoreError("PostgreSQL needs the driver: pip install 'opensage[postgres]'") from exc
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
    store = SqlStore(url, load_master_key(master_key_path))
    try:
        store.migrate()
    except Exception:
        store.close()
        raise
    return store
