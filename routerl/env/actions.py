"""The action grammar shared by the environment, the policy and the server.

One turn of the policy is::

    [<think> free text </think>] ( <route>k</route> | <accept/> )

* ``<route>k</route>`` calls candidate ``k`` (1-based position in the candidate list); the
  environment answers with the candidate's response inside ``<info>...</info>``.
* ``<accept/>`` stops and accepts the last answer (only meaningful after a route).

Parsing never raises. ``parse_action`` returns an ``Action`` whose ``kind`` is ``route``,
``accept`` or ``invalid``, and ``well_formed`` says whether the turn followed the grammar exactly
(the format term of the reward). A sloppy turn that still contains one clear action (extra text
around it) is executed but not well formed; a turn with no action, several conflicting actions or
an out-of-range index is ``invalid``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ROUTE_OPEN, ROUTE_CLOSE = "<route>", "</route>"
ACCEPT_TAG = "<accept/>"
INFO_OPEN, INFO_CLOSE = "<info>", "</info>"

_STRICT = re.compile(
    r"^\s*(?:<think>(?P<think>.*?)</think>\s*)?(?:<route>\s*(?P<k>\d{1,3})\s*</route>|(?P<accept><accept/>))\s*$",
    re.DOTALL,
)
_ROUTE = re.compile(r"<route>\s*(\d{1,3})\s*</route>")
_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL)


@dataclass(frozen=True)
class Action:
    kind: str  # "route" | "accept" | "invalid"
    index: int | None = None  # 0-based candidate index for "route"
    think: str = ""
    well_formed: bool = False
    error: str = ""


def parse_action(text: str, n_candidates: int) -> Action:
    """Parse one policy turn against a pool of ``n_candidates`` (see the module docstring)."""
    m = _STRICT.match(text)
    if m:
        think = (m.group("think") or "").strip()
        if m.group("accept"):
            return Action("accept", None, think, True)
        k = int(m.group("k"))
        if 1 <= k <= n_candidates:
            return Action("route", k - 1, think, True)
        return Action("invalid", None, think, False, f"route index {k} outside 1..{n_candidates}")
    think_m = _THINK.search(text)
    think = think_m.group(1).strip() if think_m else ""
    routes = _ROUTE.findall(text)
    accepts = text.count(ACCEPT_TAG)
    if len(set(routes)) + (1 if accepts else 0) > 1:
        return Action("invalid", None, think, False, "several conflicting actions")
    if routes:
        k = int(routes[0])
        if 1 <= k <= n_candidates:
            return Action("route", k - 1, think, False, "extra text around the action")
        return Action("invalid", None, think, False, f"route index {k} outside 1..{n_candidates}")
    if accepts:
        return Action("accept", None, think, False, "extra text around the action")
    return Action("invalid", None, think, False, "no <route>k</route> or <accept/> action")


def format_route(k: int, think: str = "") -> str:
    """The well-formed text of routing to 0-based candidate ``k``."""
    prefix = f"{THINK_OPEN}{think}{THINK_CLOSE}" if think else ""
    return f"{prefix}{ROUTE_OPEN}{k + 1}{ROUTE_CLOSE}"


def info_block(position: int, response: str, cost_usd: float, max_chars: int = 600, note: str = "") -> str:
    """The ``<info>`` block the environment returns for 0-based candidate ``position``: its answer
    (head and tail kept when longer than ``max_chars``), its cost per 1k queries and, after `` | ``,
    an answer judge's ``note`` when there is one (``routerl.routers.cascade.AnswerJudge``). The
    server's transcript of earlier attempts uses the same text, so the policy reads what it was
    trained on."""
    text = response or "(no response recorded)"
    if len(text) > max_chars:
        head = max_chars // 3
        tail = max_chars - head
        text = text[:head] + " ... " + text[-tail:]
    note = f" | {note}" if note else ""
    return f"{INFO_OPEN}[{position + 1}] answered (cost ${cost_usd * 1000:.3f}/1k q): {text}{note}{INFO_CLOSE}"


def format_accept(think: str = "") -> str:
    prefix = f"{THINK_OPEN}{think}{THINK_CLOSE}" if think else ""
    return f"{prefix}{ACCEPT_TAG}"
