"""A downstream consumer written only from docs/events.md: plain nats-py, hashes checked as it reads.

usage: python consume_events.py NATS_URL STREAM SUBJECT_FILTER COUNT [blake3|sha256] [START_POSITION]
Prints one JSON line per event: {"position", "type", "tenant", "payload", "entry_hash_ok"}.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy


def leaf_hash(alg: str, body: bytes) -> str:
    if alg == "sha256":
        return hashlib.sha256(b"\x00" + body).hexdigest()
    import blake3

    return blake3.blake3(b"\x00" + body).hexdigest()


async def main(url: str, stream: str, subject: str, count: int, alg: str, start: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        subject,
        stream=stream,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start),
    )
    seen = 0
    while seen < count:
        for msg in await sub.fetch(min(100, count - seen), timeout=10):
            entry = json.loads(msg.data)
            ok = leaf_hash(alg, msg.data) == msg.headers["Nexus-Entry-Hash"]
            print(json.dumps({"position": int(msg.headers["Nexus-Position"]), "type": entry["type"],
                              "tenant": msg.headers["Nexus-Tenant"], "payload": entry["payload"],
                              "entry_hash_ok": ok}), flush=True)
            await msg.ack()
            seen += 1
    await nc.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(args[0], args[1], args[2], int(args[3]), args[4] if len(args) > 4 else "blake3",
                     int(args[5]) if len(args) > 5 else 1))
