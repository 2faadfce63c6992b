"""Which names a queue target may carry: a queue of the user's, never a key the gateway or arq owns.

A queue target's name is a Redis key: delivery ZADDs the job onto it (``workers.delivery``). Under
``GATEWAY_KEY_PREFIX`` it is the gateway's own data: ``cg:queue`` would run the gateway's job
functions on user events, ``cg:subs`` would corrupt the subscription index. Under arq's internal
prefixes (job, result, in-progress, retry keys; the abort set) it corrupts arq's bookkeeping. A name
ending in arq's health-check suffix is the key a worker of another queue overwrites every few
seconds (``billing`` -> ``billing:health-check``, a plain SET), which would drop the jobs on it; and
a name whose health-check key lands in one of those spaces lets the user's worker write there.
arq's default queue (``arq:queue``) is an ordinary queue and stays allowed.

The prefixes come from ``arq.constants``, so an arq upgrade that moves them moves this rule too.
"""

from __future__ import annotations

import re

from arq import constants

MAX_LENGTH = 128
_CHARSET = re.compile(r"[A-Za-z0-9_\-:.]+")
CHARSET_TEXT = "letters, digits, _ - : ."
ARQ_INTERNAL_PREFIXES = (
    constants.job_key_prefix,
    constants.result_key_prefix,
    constants.in_progress_key_prefix,
    constants.retry_key_prefix,
    constants.abort_jobs_ss,
)
HEALTH_CHECK_SUFFIX = constants.health_check_key_suffix
DEFAULT_QUEUE = constants.default_queue_name


def malformed(name: str) -> str | None:
    """The charset and length part of the rule (all the request model can check on its own)."""
    if not 1 <= len(name) <= MAX_LENGTH or not _CHARSET.fullmatch(name):
        return f"must be 1-{MAX_LENGTH} characters of {CHARSET_TEXT}"
    return None


def refusal(name: str, key_prefix: str) -> str | None:
    """Why ``name`` cannot be a queue target's queue, or None when it can: the whole rule.

    ``key_prefix`` is ``GATEWAY_KEY_PREFIX``, a setting, so the routes check this and the model
    only ``malformed``. An empty prefix skips that part: every key would be the gateway's."""
    why = malformed(name)
    if why:
        return why
    if name.endswith(HEALTH_CHECK_SUFFIX):
        return f"names ending in {HEALTH_CHECK_SUFFIX!r} are arq's worker health-check keys"
    owner = _owner(name, key_prefix)
    if owner:
        return f"{name!r} is in {owner}"
    health_key = name + HEALTH_CHECK_SUFFIX
    owner = _owner(health_key, key_prefix)
    if owner:
        return f"a worker on {name!r} would write its health-check key {health_key!r} in {owner}"
    return None


def _owner(key: str, key_prefix: str) -> str | None:
    if key_prefix and key.startswith(key_prefix):
        return f"the gateway's own key space ({key_prefix!r}, GATEWAY_KEY_PREFIX)"
    reserved = next((p for p in ARQ_INTERNAL_PREFIXES if key.startswith(p)), None)
    if not reserved:
        return None
    return f"arq's internal key space ({reserved!r}; its default queue {DEFAULT_QUEUE!r} is allowed)"
