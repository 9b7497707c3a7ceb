"""What the stateful core's jobs answer, handed back into it (sans-IO): the outcome of a
REGISTER, of a location lookup, of an RFC 3263 resolution and of an HA1 read
(``workers/jobs.py`` runs the jobs beside the loop; ``workers/coreevents.py`` ``Job``).

Rules:
1. Each answer is one input of the core (``workers/stateful.py``): it starts a fresh list of
   what to send (``begin``), goes on with the request it belongs to, lets the transaction
   table's events run (``drain``) and returns what to send, as ``handle`` does.
2. A request its caller cancelled while its lookup or resolution ran gets its 487 (RFC 3261
   §16.10), if it has no final yet, and goes nowhere; a resolution that comes back for a
   request already answered (Timer C, a CANCEL) goes nowhere either.
3. A job that found nothing or failed answers as the request would have been answered
   without it: a REGISTER or an HA1 read whose cacheDB failed gets the job's status (500 or
   503), a lookup its miss (no contact: 404 unless the store says otherwise; a failed store:
   500 or 503), and a failed resolution (478 or 503) becomes the fallback while the next
   target is tried (``workers/stateful.py`` rule 2).
4. A lookup or a resolution that answers after the request's Call-ID moved to another worker
   (a worker joined meanwhile: docs/dialogs.md "Dialogs follow their Call-ID") sends nothing
   from here: the request goes to that worker and its server transaction here ends quietly
   (``workers/stateful.py`` rule 13), unless the caller cancelled it (rule 2: its 487 was
   sent here). An INVITE outside a dialog handed back by its HA1 read goes there too, as the
   claim would have sent it had it just arrived.
"""

from __future__ import annotations

from typing import Any

from ingress.sip.serialize import build_response
from workers.coreevents import Job
from workers.dialogs.duty import DialogDuty
from workers.proxy import Out
from workers.registrar.natping import note_nat
from workers.stateful import StatefulProxy
from workers.targets import contact_targets, resolved_targets


def registered(core: StatefulProxy, job: Job, status: int, reason: str,
               headers: tuple[bytes, ...], now: float) -> list[Out]:  # fmt: skip
    """The REGISTER of ``job`` is answered: what to send. A 200 from behind NAT has its
    contacts kept alive (``workers/registrar/natping.py``)."""
    outs = core.begin()
    data = build_response(job.request, status, reason, extra_headers=headers)
    assert job.txn is not None  # a "register" job has one
    if job.txn.accepts(status):
        core.table.respond(job.txn, data, status, now)
    if status == 200 and core.natping is not None and job.inb is not None:
        note_nat(core.natping, core.registrar, job.request, job.inb, core.nat_tests, now)
    core.drain(now)
    return outs


def located(core: StatefulProxy, job: Job, contacts: list[tuple[str, Any, tuple[str, ...]]],
            miss: tuple[int, str], now: float) -> list[Out]:  # fmt: skip
    """The lookup of ``job`` found ``contacts`` ((contact URI, source, Path) by q, highest
    first): forward to them in turn (``targets.contact_targets``: through a Path, or to where
    the REGISTER came from), or answer ``miss`` when there are none."""
    outs = core.begin()
    ctx = job.ctx
    assert ctx is not None
    if ctx.cancelled:
        core.local_final(ctx, 487, "Request Terminated", now)
    elif core.passed_on(ctx, now):
        pass  # rule 4: the owner of its Call-ID looks it up again
    elif not contacts:
        core.local_final(ctx, *miss, now)
    else:
        targets, bad = contact_targets(contacts)
        if bad:  # forged or damaged Path records: those contacts are skipped
            core.counters["bad_path"] += bad
        ctx.targets.extend(targets)
        if not ctx.targets:
            ctx.fallback = miss
        core.try_next(ctx, now)
    core.drain(now)
    return outs


def resolved(core: StatefulProxy, job: Job, addresses: list[tuple[str, str, int]],
             failure: tuple[int, str] | None, now: float) -> list[Out]:  # fmt: skip
    """The host of ``job.target`` resolved to ``addresses`` ((transport, ip, port), best
    first; RFC 3263 order), tried before the targets left; or it failed with ``failure``
    (478 or 503), and the next target is tried."""
    outs = core.begin()
    ctx, target = job.ctx, job.target
    assert ctx is not None and target is not None
    if ctx.cancelled:
        core.local_final(ctx, 487, "Request Terminated", now)
    elif not ctx.done and not core.passed_on(ctx, now):  # rule 4
        if failure is not None:
            ctx.fallback = failure
        ctx.targets[:0] = resolved_targets(target, addresses)
        core.try_next(ctx, now)
    core.drain(now)
    return outs


def authenticated(core: StatefulProxy, job: Job, ha1: str | None, now: float) -> list[Out]:
    """The HA1 an ``auth`` job read (None: no such user): the request, handled again."""
    auth = core.sl.auth
    assert auth is not None and job.credentials is not None
    outs = core.begin()
    if DialogDuty.starts(job.request) and core.passes_on(job.request, job.inb):
        core.drain(now)  # rule 4: nothing was started for it here
        return outs
    auth.given = (job.credentials, ha1)
    try:
        core.receive_request(job.request, job.inb, now)
    finally:
        auth.given = None
    core.drain(now)
    return outs


def auth_failed(core: StatefulProxy, job: Job, status: int, reason: str,
                now: float) -> list[Out]:  # fmt: skip
    """The ``auth`` job's cacheDB failed: the request is answered ``status``."""
    outs = core.begin()
    outs.append(core.sl._reply(job.request, job.inb, status, reason))
    core.drain(now)
    return outs
