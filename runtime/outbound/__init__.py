"""Outbound HTTP for functions (`ctx.http`): requests that cannot reach inside the network.

`policy` holds the rules (which addresses are internal, `FERRY_OUTBOUND_ALLOW`);
`client` the `requests`-based client that applies them to every connection it makes.
A refusal raises `runtime.errors.OutboundRefused`, a `Permanent` failure whose message
names the rule; an answer over the size cap raises `ResponseTooLarge`.
"""

from __future__ import annotations

from runtime.outbound.client import OutboundClient
from runtime.outbound.policy import OutboundPolicy, parse_allow_entry, refusal_rule

__all__ = ["OutboundClient", "OutboundPolicy", "parse_allow_entry", "refusal_rule"]
