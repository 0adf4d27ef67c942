"""The error tree: every error nextbest raises on purpose, and where each is defined.

    NextbestError              a refusal the caller can act on (the root)
     ├── ConfigError           a config file is invalid            (file, field, problem)
     ├── RuleError             an expression does not compile             (line, column)
     │    └── CatalogError     catalog rules that do not compile     policy/catalog.py
     ├── InvalidInput          a request or event is malformed              (code, field)
     │    ├── NotFound         it names something that does not exist             (code)
     │    ├── UnknownShard     a slot move names a shard that does not run        (code)
     │    ├── RequestIdReused  a decide's request id answered another request     (code)
     │    └── LinkError        an open link not ours, or expired    delivery/links.py
     ├── AlreadyMerged         a merge names an id merged away already          (target)
     ├── ModelError            a model is refused; the serving model stays
     │    ├── ModelIntegrityError   the file does not match its manifest
     │    └── ModelIncompatible     the shard cannot build its features        (missing)
     ├── Backlogged            the outbound queue is full; retry later            (code)
     ├── MergeBusy             a merge must wait for another one; retry           (code)
     ├── MoveInProgress        slots are moving already: one operation at a time  (code)
     ├── Moved                 the customer was merged into another      (target, moved)
     ├── SlotMoved             a shard asked about a slot it does not own  (slot, owner,
     │                         epoch): the caller refreshes its slot map and resends
     ├── SlotFrozen            the slot is moving to another shard right now; retry
     ├── SnapshotError         a snapshot cannot be used           journal/snapshot.py
     ├── SlotMapError          the stored slot map cannot be used     stores/slotmap.py
     └── TrainingError         a table cannot be trained on          training/train.py

    Fenced                     a newer instance owns the shard's directory
                                                                 journal/fencing.py
    StorageFailed              the WAL could not be written or synced   journal/wal.py

`Fenced` and `StorageFailed` are outside the tree on purpose: they are never the
caller's fault, and the writer that meets one must stop (a fenced shard answers
nothing more; a failed log restarts the process), so no `except NextbestError` that
answers a client may catch them.

Errors cross the actor boundary as data, not tracebacks. How each maps to an HTTP status
and error code (4xx for the caller's mistakes, 503 with Retry-After for what passes,
never a 5xx for bad input) lives in serving/errors.py, not on these classes.
"""

from __future__ import annotations

__all__ = [
    "AlreadyMerged",
    "Backlogged",
    "MergeBusy",
    "Moved",
    "SlotFrozen",
    "SlotMoved",
    "ConfigError",
    "InvalidInput",
    "ModelError",
    "ModelIncompatible",
    "ModelIntegrityError",
    "MoveInProgress",
    "NextbestError",
    "NotFound",
    "RequestIdReused",
    "RuleError",
    "UnknownShard",
]


class NextbestError(Exception):
    """Root of every error nextbest raises on purpose.

    Errors cross process boundaries (Ray actors), so they pickle as their class and
    their instance attributes, whatever their constructor takes.
    """

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), str(self), self.__dict__))


def _rebuild(cls: type[NextbestError], message: str, state: dict[str, object]) -> NextbestError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class ConfigError(NextbestError):
    """A config file is invalid; the message names the file, the field and the problem."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {field}: {problem}" for field, problem in problems]
        super().__init__("invalid config\n  " + "\n  ".join(lines))


class RuleError(NextbestError):
    """An expression failed to compile; line and column are 1-based."""

    def __init__(self, expression: str, message: str, line: int = 1, column: int = 1) -> None:
        self.expression = expression
        self.line = line
        self.column = column
        self.reason = message
        super().__init__(f"line {line}, column {column}: {message} in {expression!r}")


class InvalidInput(NextbestError):
    """Malformed input from a client; `code` is machine readable, `field` optional."""

    code = "invalid_field"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class NotFound(InvalidInput):
    """The input names something that does not exist (a decision, an action)."""

    code = "not_found"


class UnknownShard(InvalidInput):
    """A slot move names a shard that is not running (scale up first)."""

    code = "unknown_shard"


class RequestIdReused(InvalidInput):
    """A decide's request id was answered before, for another request (another channel
    or placement): a retry must ask for the same, a new decision needs a new id (409)."""

    code = "request_id_reused"


class Backlogged(NextbestError):
    """The outbound queue is full: what would add to it waits (503, retry later)."""

    code = "outbound_full"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Moved(NextbestError):
    """The customer was merged into `target`: ask the target's shard instead. `moved`
    holds every merged customer a batch named (customer -> target), so one answer is
    enough to resend the whole batch."""

    code = "moved"

    def __init__(self, customer_id: str, target: str, moved: dict[str, str] | None = None) -> None:
        super().__init__(f"{customer_id} was merged into another customer")
        self.message = str(self)
        self.customer = customer_id
        self.target = target
        self.moved = moved or {customer_id: target}


class SlotMoved(NextbestError):
    """A shard was asked about slot `slot`, which it does not own: `owner` owns it as of
    the shard's map at `epoch`. Nothing of the call was applied; the caller refreshes its
    slot map (it may be newer than the shard's) and sends the call again (503 if one is
    ever left over)."""

    code = "slot_moved"

    def __init__(self, slot: int, owner: int, epoch: int) -> None:
        super().__init__(f"slot {slot} is owned by shard {owner} (slot map epoch {epoch})")
        self.message = str(self)
        self.slot = slot
        self.owner = owner
        self.epoch = epoch


class SlotFrozen(NextbestError):
    """Slot `slot` is being moved to another shard right now: nothing of the call was
    applied; retry shortly (503 + Retry-After, code `slot_moving`)."""

    code = "slot_moving"

    def __init__(self, slot: int, migration: str) -> None:
        super().__init__(f"slot {slot} is moving to another shard; retry shortly")
        self.message = str(self)
        self.slot = slot
        self.migration = migration


class AlreadyMerged(NextbestError):
    """A merge names as `merged` an id that was merged into `target` already: merging
    it again would fold two other people together, so the caller must name `target`."""

    code = "already_merged"

    def __init__(self, customer_id: str, target: str) -> None:
        super().__init__(
            f"{customer_id} was already merged into {target}; "
            f"to merge that customer, name {target} as merged"
        )
        self.message = str(self)
        self.customer = customer_id
        self.target = target


class MergeBusy(NextbestError):
    """The merge cannot run now: the customer it would fold away is itself the survivor
    of a merge still in flight (or the attempt was called off); retry shortly."""

    code = "merge_in_progress"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MoveInProgress(NextbestError):
    """Slots are moving already (a scale, move or rebalance runs): one operation at a
    time; wait for it (its progress says when) and ask again."""

    code = "move_in_progress"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ModelError(NextbestError):
    """A model was refused; whatever served before keeps serving."""


class ModelIntegrityError(ModelError):
    """The model file does not match its manifest (sha256, format)."""


class ModelIncompatible(ModelError):
    """The model needs features this deployment cannot build."""

    def __init__(self, model: str, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(
            f"model {model} needs features this config cannot build: {', '.join(missing)}"
        )
