"""Sending a request's items to the shards that own them, and following merges.

Every route that reaches shards goes through here, so this is the one place that knows
two things about the path there:

- *Grouping*: the items of a request (events, outcomes, message ids) are grouped by the
  shard that owns each, and every shard gets its part in one call, all concurrently,
  as one typed message (actors/messages.py) that `wrap` makes of the part's items.
- *Following `moved`*: a customer merged into another lives at the survivor now. A shard
  asked about a merged customer applies nothing of the call and answers `moved`, naming
  every merged customer the call held and where each went. That part is sent again, each
  merged customer replaced by the end of its chain of merges (`root`, which shortens the
  chain on the way), as often as merges keep moving customers, up to `MAX_HOPS` times;
  then the request answers 503 `merge_in_progress` (safe to retry: nothing of that part
  was applied). A part that was answered otherwise is never sent again.
- *Following slots*: a shard asked about a slot it does not own (the slot moved to
  another shard) or one being moved right now applies nothing of the call and answers
  `SlotMoved` or `SlotFrozen`. Such a part is grouped again by the refreshed slot map
  (the router refreshed it) and sent again, after a short pause if it was frozen, up to
  `MAX_SLOT_HOPS` times; what is left over is a 503 (`slot_moved`/`slot_moving`).
- *Each item on its own* (`follow_each`, POST /v1/decide/batch): a shard answers every
  item of its part separately; an item answered `moved` goes again for its survivor,
  and a part that could not be served answers its error for each of its items, never
  for the items of other parts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from actors.remote import ShardUnavailable
from actors.router import MAX_SLOT_HOPS
from decisioning.errors import SlotFrozen, SlotMoved
from serving.errors import moved_of, raise_for

__all__ = ["MAX_HOPS", "Fanout", "Part", "Router", "group"]

MAX_HOPS = 4  # times a part is sent again while merges move its customers
T = TypeVar("T")


class Router(Protocol):
    """What serving needs of the shard router (actors.remote.ShardRouter)."""

    shards: list[Any]

    def shard_of(self, customer_id: str) -> int: ...
    async def call(self, shard: int, method: str, *args: Any) -> Any: ...
    async def call_all(
        self, calls: list[tuple[int, str, Any]], settle: bool = False
    ) -> list[Any]: ...
    async def supervisor_call(self, method: str, *args: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class Part(Generic[T]):
    """The items one shard got, and its answer."""

    shard: int
    items: list[T]
    answer: Any


def group(items: Iterable[T], shard_of: Callable[[T], int]) -> dict[int, list[T]]:
    """Items by the shard that owns each, in their order within each shard."""
    parts: dict[int, list[T]] = {}
    for item in items:
        parts.setdefault(shard_of(item), []).append(item)
    return parts


Send = Callable[[list[T]], Awaitable[list[Part[T]]]]
Wrap = Callable[[list[T]], Any]  # a shard's part of the items -> the message it gets


class Fanout:
    """Calls to the shards that own what a request names; `root(customer)` says where a
    merged customer lives now."""

    def __init__(self, router: Router, root: Callable[[str], Awaitable[str]]) -> None:
        self.router = router
        self.root = root

    async def send(
        self,
        method: str,
        items: Iterable[T],
        shard_of: Callable[[T], int],
        wrap: Wrap[T],
        settle: bool = False,
    ) -> list[Part[T]]:
        """`method(wrap(part))` on each shard for its part of `items`, concurrently, the
        parts grouped by `shard_of`; a part whose slots moved is grouped and sent again.
        `settle`: a part that cannot be served now is answered its `ShardUnavailable`
        (`Router.call_all`), instead of raising it for every part."""
        done: list[Part[T]] = []
        pending = list(items)
        for hop in range(MAX_SLOT_HOPS + 1):
            parts = group(pending, shard_of)
            shards = list(parts)
            calls = [(s, method, wrap(parts[s])) for s in shards]
            answers = await self.router.call_all(calls, settle)
            pending, frozen = [], False
            for shard, answer in zip(shards, answers, strict=True):
                if hop < MAX_SLOT_HOPS and isinstance(answer, SlotMoved | SlotFrozen):
                    pending += parts[shard]
                    frozen = frozen or isinstance(answer, SlotFrozen)
                else:
                    done.append(Part(shard, parts[shard], answer))
            if not pending:
                break
            if frozen:
                await asyncio.sleep(min(0.01 * 2**hop, 0.25))
        return done

    async def everywhere(self, method: str, message: Any) -> list[Any]:
        """`method(message)` on every shard, concurrently; the answers in shard order."""
        shards = range(len(self.router.shards))
        return await self.router.call_all([(s, method, message) for s in shards])

    async def follow(
        self,
        method: str,
        items: list[T],
        customer: Callable[[T], str],
        rehome: Callable[[T, str], T],
        wrap: Wrap[T],
    ) -> list[Part[T]]:
        """`send` by customer, following merges: `rehome(item, survivor)` is the item for
        the customer it names now. The parts with their answers; the first error answered
        is raised as soon as it is seen (`raise_for`), and nothing is sent after it."""

        def shard_of(item: T) -> int:
            return self.router.shard_of(customer(item))

        async def send(items: list[T]) -> list[Part[T]]:
            return await self.send(method, items, shard_of, wrap)

        return await self._follow(items, customer, rehome, send, raising=True)

    async def follow_each(
        self,
        method: str,
        items: list[T],
        customer: Callable[[T], str],
        rehome: Callable[[T, str], T],
        wrap: Wrap[T],
    ) -> list[Any]:
        """`send` by customer to a method that answers each item of a part on its own (a
        list, in the part's order): one answer per item, in the order of `items`. An
        item answered `moved` goes again for the customer it names now (`rehome`), up to
        `MAX_HOPS` times (then `merge_in_progress`); a part answered one error (its shard
        unavailable, a slot still moving) answers it for each of its items. Nothing is
        raised for an item: every item gets its answer or its error."""
        answers: list[Any] = [None] * len(items)
        pending = list(enumerate(items))

        def shard_of(placed: tuple[int, T]) -> int:
            return self.router.shard_of(customer(placed[1]))

        def wrap_part(part: list[tuple[int, T]]) -> Any:
            return wrap([item for _, item in part])

        for _ in range(MAX_HOPS + 1):
            parts = await self.send(method, pending, shard_of, wrap_part, settle=True)
            pending = []
            for part in parts:
                each = part.answer
                if not isinstance(each, list):  # one answer for the part: for every item
                    each = [each] * len(part.items)
                for (i, item), answer in zip(part.items, each, strict=True):
                    moved, c = moved_of(answer), customer(item)
                    if moved is None:
                        answers[i] = answer
                    elif c in moved:  # merged away: to where it lives now
                        pending.append((i, rehome(item, await self.root(c))))
                    else:
                        pending.append((i, item))
            if not pending:
                return answers
        for i, _ in pending:
            answers[i] = ShardUnavailable(
                "merges are moving this customer right now", "merge_in_progress"
            )
        return answers

    async def follow_one(
        self,
        customer: str,
        method: str,
        message_of: Callable[[str], Any],
        stop: Callable[[str], Any] | None = None,
    ) -> tuple[Any, str]:
        """`method(message_of(customer))` on the customer's shard, following merges; the
        answer and the customer that gave it. `stop(customer)`, when it returns other
        than None, is the answer instead, without a call (checked before every send)."""

        async def send(items: list[str]) -> list[Part[str]]:
            [c] = items
            shard = self.router.shard_of(c)
            early = None if stop is None else stop(c)
            if early is None:
                early = await self.router.call(shard, method, message_of(c))
            return [Part(shard, [c], early)]

        [part] = await self._follow([customer], str, lambda _, c: c, send)
        return part.answer, part.items[0]

    async def _follow(
        self,
        items: list[T],
        customer: Callable[[T], str],
        rehome: Callable[[T, str], T],
        send: Send[T],
        raising: bool = False,
    ) -> list[Part[T]]:
        done: list[Part[T]] = []
        pending = items
        for _ in range(MAX_HOPS + 1):
            parts = await send(pending)
            pending = []
            for part in parts:
                moved = moved_of(part.answer)
                if moved is None:
                    if raising:
                        raise_for(part.answer)
                    done.append(part)
                    continue
                roots = {gone: await self.root(gone) for gone in moved}  # (and shortened)
                for item in part.items:
                    c = customer(item)
                    pending.append(rehome(item, roots[c]) if c in roots else item)
            if not pending:
                return done
        what = "this customer" if len(items) == 1 else "these customers"
        raise ShardUnavailable(f"merges are moving {what} right now", "merge_in_progress")
