"""The model registry over the project's SQLite store: versions, aliases and the alias log.

Every write runs in one of Store's BEGIN IMMEDIATE transactions, so version allocation and its
insert, or an alias move and its log event, are atomic even with many writer processes: two jobs
registering at once get distinct versions, and two promoters never interleave. Hashing a
checkpoint (slow for big files) happens before the transaction, never while holding the lock.
"""

from __future__ import annotations

import dataclasses
import enum
import getpass
import json
import shlex
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from cl_hpc.data.files import sha256_file
from cl_hpc.errors import ChecksumError
from cl_hpc.registry.provenance import git_state, package_versions, python_version
from cl_hpc.registry.records import AliasEvent, ModelVersion, rollback_target
from cl_hpc.registry.versions import (
    RegistryError,
    Version,
    check_alias,
    check_name,
    is_version,
    next_stateful,
    next_stateless,
    parse_version,
    strategy_kind,
)
from cl_hpc.store.db import Store


class Unchecked(enum.Enum):
    """``promote(expect=UNCHECKED)``: move the alias wherever it points now (a move by hand)."""

    ANY = "any"


UNCHECKED = Unchecked.ANY


class AliasMoved(RegistryError):
    """The alias no longer points at the version the caller's decision was made against."""

    def __init__(self, message: str, expected: Version | None, current: Version | None) -> None:
        super().__init__(message)
        self.expected, self.current = expected, current


_MAX_LISTED = 12  # versions named in an "unknown version" error; the newest ones


class ModelRegistry:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    @classmethod
    def open(cls, root: Path | str, **store_options: Any) -> "ModelRegistry":
        """A registry on its own Store under ``root``; close it (or use ``with``)."""
        return cls(Store(root, **store_options))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "ModelRegistry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- registering ------------------------------------------------------------------------

    def register(self, name: str, checkpoint_path: Path | str, *, strategy: str,
                 parent: str | Version | None = None, checkpoint_sha256: str | None = None,
                 config: Mapping[str, Any] | None = None, window_partitions: Sequence[str] = (),
                 window_digest: str | None = None, metrics: Mapping[str, Any] | None = None,
                 tags: Iterable[str] = (), run_id: str | None = None, task_key: str | None = None,
                 workdir: Path | str | None = None, model_class: str | None = None,
                 init_args: Mapping[str, Any] | None = None, datamodule_class: str | None = None,
                 signature: Mapping[str, Any] | None = None) -> ModelVersion:
        """Record a trained checkpoint as the next version of ``name`` and return it.

        A stateless strategy makes (X+1).0; a stateful one needs ``parent`` and makes its X.(Y+1)
        (refused if that exists: see versions.py). ``checkpoint_sha256``, what training recorded,
        is checked against the file. Registering the same checkpoint bytes again under ``name``
        (a retried task) returns the version already made instead of a new one.
        ``workdir``: the git checkout of the training code (default: the current directory).
        ``model_class``/``init_args``/``datamodule_class``/``signature``: what the version is (the
        train task's outputs); loading rebuilds the recorded classes from them.
        """
        parent_version = self._parent(check_name(name), strategy, parent)
        path = Path(checkpoint_path).resolve()
        commit, dirty = git_state(Path(workdir) if workdir else Path.cwd())
        draft = ModelVersion(
            name=name, version=Version(0, 0), strategy=strategy, checkpoint_path=str(path),
            checkpoint_sha256=_checked_sha(path, checkpoint_sha256), created=0.0, parent=parent_version,
            config=dict(config or {}), window_partitions=list(window_partitions), window_digest=window_digest,
            git_commit=commit, git_dirty=dirty, python=python_version(), packages=package_versions(),
            metrics=dict(metrics or {}), tags=_tags([], tags), run_id=run_id, task_key=task_key,
            model_class=model_class, init_args=dict(init_args or {}), datamodule_class=datamodule_class,
            signature=dict(signature or {}))
        return self.store._transaction(lambda: self._insert(draft))

    def _parent(self, name: str, strategy: str, parent: str | Version | None) -> Version | None:
        if strategy_kind(strategy) == "stateful" and parent is None:
            raise RegistryError(f"strategy {strategy!r} fine-tunes an existing version: pass parent=X.Y "
                                f"(versions of {name!r}: {self._listing(name)})")
        return None if parent is None else parse_version(parent)

    def _insert(self, draft: ModelVersion) -> ModelVersion:
        same = self._fetch("SELECT * FROM models WHERE name = ? AND checkpoint_sha256 = ?",
                           [draft.name, draft.checkpoint_sha256])
        if same:
            return ModelVersion.from_row(same[0])  # a retried registration of the same bytes
        existing = self._versions(draft.name)
        if draft.parent is not None and draft.parent not in existing:
            raise self._unknown(draft.name, str(draft.parent), what="parent version")
        if strategy_kind(draft.strategy) == "stateless":
            version = next_stateless(existing)
        else:
            version = next_stateful(draft.parent, existing)  # type: ignore[arg-type]
        record = dataclasses.replace(draft, version=version, created=self.clock())
        self.store.db["models"].insert(record.to_row())
        return record

    def tag(self, name: str, ref: str | Version, tags: Iterable[str]) -> ModelVersion:
        """Add ``tags`` to a version (kept in order, without duplicates)."""
        version = self.resolve(name, ref)

        def work() -> ModelVersion:
            record = self.get(name, version)
            merged = _tags(record.tags, tags)
            self.store.db.execute("UPDATE models SET tags = ? WHERE name = ? AND major = ? AND minor = ?",
                                  [json.dumps(merged), name, version.major, version.minor])
            return dataclasses.replace(record, tags=merged)

        return self.store._transaction(work)

    # ---- reading ----------------------------------------------------------------------------

    def names(self) -> list[str]:
        return [row["name"] for row in self._fetch("SELECT DISTINCT name FROM models ORDER BY name")]

    def require_model(self, name: str) -> str:
        """``name`` if anything is registered under it, else an error listing the models."""
        if name not in self.names():
            raise self._unknown(name, "", what="version")
        return name

    def versions(self, name: str) -> list[ModelVersion]:
        rows = self._fetch("SELECT * FROM models WHERE name = ? ORDER BY major, minor", [name])
        return [ModelVersion.from_row(row) for row in rows]

    def aliases(self, name: str) -> dict[str, Version]:
        rows = self._fetch("SELECT * FROM aliases WHERE name = ? ORDER BY alias", [name])
        return {row["alias"]: Version(row["major"], row["minor"]) for row in rows}

    def events(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        """The alias log of ``name`` (one alias, or all), oldest first."""
        where, args = ("name = ? AND alias = ?", [name, alias]) if alias else ("name = ?", [name])
        rows = self._fetch(f"SELECT * FROM alias_events WHERE {where} ORDER BY id", args)
        return [AliasEvent.from_row(row) for row in rows]

    def last_event(self, name: str, alias: str) -> AliasEvent | None:
        """The newest move of one alias: what a server polls to see a promote or rollback (one indexed row)."""
        rows = self._fetch("SELECT * FROM alias_events WHERE name = ? AND alias = ? ORDER BY id DESC LIMIT 1",
                           [name, alias])
        return AliasEvent.from_row(rows[0]) if rows else None

    def resolve(self, name: str, ref: str | Version) -> Version:
        """The version ``ref`` names: "X.Y" or an alias; a clear error listing what exists if none."""
        if isinstance(ref, Version) or is_version(ref):
            version = parse_version(ref)
            if version in self._versions(name):
                return version
            raise self._unknown(name, str(version), what="version")
        target = self.aliases(name).get(ref)
        if target is None:
            raise self._unknown(name, ref, what="version or alias")
        return target

    def get(self, name: str, ref: str | Version) -> ModelVersion:
        version = self.resolve(name, ref)
        rows = self._fetch("SELECT * FROM models WHERE name = ? AND major = ? AND minor = ?",
                           [name, version.major, version.minor])
        return ModelVersion.from_row(rows[0])

    # ---- trust ------------------------------------------------------------------------------

    def verify(self, name: str, ref: str | Version) -> ModelVersion:
        """The record, once its checkpoint's sha256 matches; quarantines it and raises if not."""
        record = self.get(name, ref)
        path = _existing(record)
        actual = sha256_file(path)
        if actual != record.checkpoint_sha256:
            raise self._quarantine(record, actual)
        return record

    def load_payload(self, name: str, ref: str | Version) -> dict[str, Any]:
        """The checkpoint payload of a version or alias (classes, init arguments, states, signature),
        verified before it is unpickled with weights_only=True; a changed file quarantines the version."""
        record = self.get(name, ref)
        path = _existing(record)
        # torch: imported only by the callers that load
        from cl_hpc.learn.checkpoint import CheckpointChanged, read_payload

        rows = record.metrics.get("train_rows")  # a first-format checkpoint's moments count (see read_payload)
        try:  # reads once, verifies, then weights_only=True
            return read_payload(path, record.checkpoint_sha256, int(rows) if isinstance(rows, (int, float)) else None)
        except CheckpointChanged as exc:
            raise self._quarantine(record, exc.actual) from exc

    def load_model(self, name: str, ref: str | Version) -> Any:
        """A version or alias as a ``cl_hpc.learn.workload.Workload``: its recorded model class built with
        its recorded init arguments and weights (eval mode, CPU), its data module with its preprocessing
        state. A class that moved or changed its signature is a ContractError naming both."""
        from cl_hpc.learn.checkpoint import workload_from

        record = self.get(name, ref)
        return workload_from(self.load_payload(name, record.version), f"model {record.label}")

    def _quarantine(self, record: ModelVersion, actual: str) -> ChecksumError:
        reason = (f"checkpoint sha256 was {actual}, not the registered {record.checkpoint_sha256} "
                  f"(found {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.clock()))})")
        self.store._transaction(lambda: self.store.db.execute(
            "UPDATE models SET quarantined = ? WHERE name = ? AND major = ? AND minor = ? AND quarantined IS NULL",
            [reason, record.name, record.version.major, record.version.minor]))
        return ChecksumError(
            f"checkpoint {record.checkpoint_path} of model {record.label} has sha256 {actual}, but "
            f"{record.checkpoint_sha256} was recorded when it was registered: the file changed since. "
            f"{record.label} is now marked unpromotable (quarantined); promote another version, or "
            f"register a freshly trained checkpoint")

    # ---- aliases ----------------------------------------------------------------------------

    def promote(self, name: str, ref: str | Version, alias: str = "champion", *, reason: str,
                actor: str | None = None, run_id: str | None = None,
                expect: str | Version | None | Unchecked = UNCHECKED) -> AliasEvent | None:
        """Point ``alias`` at a verified version and log it; None if it already pointed there.

        ``expect``: the version the decision to promote was made against (the champion the gate
        compared the challenger with; None: the alias was unset). The move is then a
        compare-and-set inside the write transaction: AliasMoved if the alias points elsewhere by
        then, so a concurrent promotion is never replaced by a version never compared with it.
        """
        check_alias(alias)
        expected = expect if expect is UNCHECKED or expect is None else _as_version(expect)
        record = self._trusted(name, ref)
        return self._move(record, alias, "promote", _reason(reason), actor, run_id, expect_last=None,
                          expect_current=expected)

    def rollback(self, name: str, alias: str = "champion", *, reason: str, to: str | Version | None = None,
                 actor: str | None = None, run_id: str | None = None) -> AliasEvent:
        """Re-point ``alias`` at the version it had before its latest change not yet undone (see
        records.rollback_target), or at ``to``. Logged like a promote; no event is ever removed."""
        check_alias(alias)
        reason = _reason(reason)
        events = self.events(name, alias)
        if not events:
            raise RegistryError(f"alias {alias!r} of model {name!r} was never set; aliases: "
                                f"{_alias_listing(self.aliases(name))}")
        target = self._rollback_target(name, alias, events) if to is None else to
        record = self._trusted(name, target)
        action = "rollback" if to is None else "rollback-to"
        event = self._move(record, alias, action, reason, actor, run_id, expect_last=events[-1].id)
        if event is None:
            raise RegistryError(f"alias {alias!r} of model {name!r} already points at {record.version}")
        return event

    def _rollback_target(self, name: str, alias: str, events: list[AliasEvent]) -> Version:
        target = rollback_target(events)
        if target is None:
            history = ", ".join(f"{e.action} {e.from_version or '(new)'} -> {e.to_version}" for e in events)
            raise RegistryError(f"alias {alias!r} of model {name!r} has no earlier version to roll back to "
                                f"(history: {history}); name one with to=X.Y (--to X.Y)")
        return target

    def _trusted(self, name: str, ref: str | Version) -> ModelVersion:
        record = self.get(name, ref)
        if record.quarantined:
            raise RegistryError(f"{record.label} is quarantined and can never be promoted: {record.quarantined}")
        return self.verify(name, record.version)

    def _move(self, record: ModelVersion, alias: str, action: str, reason: str, actor: str | None,
              run_id: str | None, expect_last: int | None,
              expect_current: Version | None | Unchecked = UNCHECKED) -> AliasEvent | None:
        def work() -> AliasEvent | None:
            self._still_movable(record, alias, expect_last)
            current = self.aliases(record.name).get(alias)
            if current == record.version:
                return None
            if expect_current is not UNCHECKED and current != expect_current:
                raise self._moved(record, alias, expect_current, current)
            return self._write_event(record, alias, action, current, reason, actor or _actor(), run_id)

        return self.store._transaction(work)

    def _still_movable(self, record: ModelVersion, alias: str, expect_last: int | None) -> None:
        """Inside the write transaction: nothing changed since the caller decided (optimistic check)."""
        if self.get(record.name, record.version).quarantined:
            raise RegistryError(f"{record.label} was quarantined meanwhile and can never be promoted")
        if expect_last is not None:
            events = self.events(record.name, alias)
            if events[-1].id != expect_last:
                raise RegistryError(f"alias {alias!r} of model {record.name!r} was changed meanwhile (event "
                                    f"#{events[-1].id}: {events[-1].action} -> {events[-1].to_version}); "
                                    f"look at the log and roll back again if still needed")

    def _moved(self, record: ModelVersion, alias: str, expected: Version | None, current: Version | None) -> AliasMoved:
        events = self.events(record.name, alias)
        moved = "it was never set"
        if events:
            last = events[-1]
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last.at))
            moved = (f"event #{last.id} at {when} by {last.actor}: {last.action} {last.from_version or '(new)'} -> "
                     f"{last.to_version}, {last.reason!r}")
        gate = f"{alias} pointed at {expected}" if expected else f"{alias} was unset (a cold start)"
        now = f"{alias} now points at {current}" if current else f"{alias} is unset"
        again = f"compare it with {current}" if current else "judge it again"
        return AliasMoved(
            f"{record.label} was not promoted: it was judged while {gate}, but {now} ({moved}). "
            f"{record.label} stays registered; {again} (run the pipeline again), or promote it by hand: "
            f"{self._promote_command(record, alias, current)}",
            expected, current)

    def _promote_command(self, record: ModelVersion, alias: str, current: Version | None) -> str:
        """The CLI line that promotes ``record`` in this registry (not necessarily the default one),
        and only while ``alias`` still points where it does now."""
        words = ["python", "-m", "cl_hpc.registry", "--store-root", str(self.store.path.parent.resolve()),
                 "--name", record.name, "promote", str(record.version), "--alias", alias,
                 *(["--expect", str(current)] if current else []), "--reason"]
        return f"{shlex.join(words)} '<why>'"

    def _write_event(self, record: ModelVersion, alias: str, action: str, current: Version | None,
                     reason: str, actor: str, run_id: str | None) -> AliasEvent:
        now, target = self.clock(), record.version
        self.store.db["aliases"].upsert({"name": record.name, "alias": alias, "major": target.major,
                                         "minor": target.minor, "updated": now}, pk=("name", "alias"))
        cursor = self.store.db.execute(
            "INSERT INTO alias_events (at, name, alias, action, from_major, from_minor, to_major, to_minor, "
            "reason, actor, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [now, record.name, alias, action, current.major if current else None,
             current.minor if current else None, target.major, target.minor, reason, actor, run_id])
        return AliasEvent(id=int(cursor.lastrowid), at=now, name=record.name, alias=alias, action=action,
                          from_version=current, to_version=target, reason=reason, actor=actor, run_id=run_id)

    # ---- helpers ----------------------------------------------------------------------------

    def _fetch(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self.store.db.execute(sql, list(args))
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row)) for row in cursor.fetchall()]

    def _versions(self, name: str) -> list[Version]:
        rows = self._fetch("SELECT major, minor FROM models WHERE name = ? ORDER BY major, minor", [name])
        return [Version(row["major"], row["minor"]) for row in rows]

    def _listing(self, name: str) -> str:
        versions = [str(v) for v in self._versions(name)]
        if len(versions) > _MAX_LISTED:
            versions = [f"... {len(versions) - _MAX_LISTED} older", *versions[-_MAX_LISTED:]]
        return ", ".join(versions) or "none yet"

    def _unknown(self, name: str, ref: str, what: str) -> RegistryError:
        if name not in self.names():
            known = ", ".join(self.names()) or "none: nothing is registered yet"
            return RegistryError(f"no model named {name!r} in {self.store.path}; models: {known}")
        return RegistryError(f"model {name!r} has no {what} {ref!r}; versions: {self._listing(name)}; "
                             f"aliases: {_alias_listing(self.aliases(name))}")


def _checked_sha(path: Path, expected: str | None) -> str:
    """The file's sha256, which must be what training recorded (when given)."""
    if not path.is_file():
        raise RegistryError(f"checkpoint {path} does not exist; nothing was registered")
    actual = sha256_file(path)
    if expected is not None and actual != expected:
        raise ChecksumError(f"checkpoint {path} has sha256 {actual}, but training recorded {expected}: the file "
                            f"changed after training; nothing was registered (re-run the train task)")
    return actual


def _as_version(value: str | Version) -> Version:
    return value if isinstance(value, Version) else parse_version(value)


def _existing(record: ModelVersion) -> Path:
    # A missing file is not proof of tampering (an unmounted filesystem): refuse, but don't quarantine.
    path = Path(record.checkpoint_path)
    if not path.is_file():
        raise RegistryError(f"checkpoint {path} of model {record.label} does not exist (moved, deleted, or its "
                            f"filesystem is not mounted here)")
    return path


def _tags(current: list[str], new: Iterable[str]) -> list[str]:
    merged = list(current)
    for tag in new:
        if not isinstance(tag, str) or not tag.strip():
            raise RegistryError(f"tag {tag!r} is not valid: tags are non-empty strings")
        if tag.strip() not in merged:
            merged.append(tag.strip())
    return merged


def _reason(reason: str) -> str:
    if not reason or not reason.strip():
        raise RegistryError("a reason is required: say why the alias moves (it is kept in the alias log)")
    return reason.strip()


def _actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _alias_listing(aliases: Mapping[str, Version]) -> str:
    return ", ".join(f"{alias} -> {version}" for alias, version in aliases.items()) or "none"
