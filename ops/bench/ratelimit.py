"""What the rate limiter (api/ratelimit.py) adds to each request, before any route runs: an API key is one
SHA-256 and a bucket update, a user one HS256 signature check (no database) and a bucket update.
`shared_*` are the same with the buckets shared between API processes (application/shared_budget.py): an
opaque id (keyed BLAKE2b) per check and a count of what was spent, which the exchange sends every 0.1 s.
Prints JSON (microseconds per request, median of runs).

    python ops/bench/ratelimit.py [--runs 5] [--n 20000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import timeit

import jwt
from argon2 import PasswordHasher
from starlette.datastructures import Headers

from api.ratelimit import RateLimits
from application.sessions import SessionService
from application.shared_budget import SharedBuckets, bucket_id_secret


class _NoUsers:
    """SessionService only needs a hasher here: nothing is signed in, only a token's signature is checked."""

    hasher = PasswordHasher(time_cost=1, memory_cost=64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    key = b"k" * 32
    sessions = SessionService(_NoUsers(), None, key, platform_tenant="platform")  # type: ignore[arg-type]
    now = int(time.time())  # the claims of an access token as application/sessions issues them
    access = jwt.encode({"iss": "nexusai", "sub": "u1", "tid": "acme", "fam": "00000000-0000-0000-0000-000000000000",
                         "typ": "access", "iat": now, "exp": now + 300}, key, algorithm="HS256")
    private, shared = (RateLimits(key_per_minute=1e12, key_burst=10**12, user_per_minute=1e12, user_burst=10**12,
                                  sessions=sessions) for _ in range(2))
    buckets = SharedBuckets({"keys": shared.keys, "users": shared.users}, bucket_id_secret(key))
    cases = {"api_key_us": Headers({"authorization": "Bearer nx_0123456789ab_" + "A" * 43}),
             "user_jwt_us": Headers({"authorization": f"Bearer {access}"})}
    result = {}
    for prefix, limits in (("", private), ("shared_", shared)):
        for name, headers in cases.items():
            runs = []
            for _ in range(args.runs):
                runs.append(timeit.timeit(lambda h=headers, lim=limits: lim.wait(h), number=args.n) / args.n * 1e6)
                buckets.spent_here()  # as the exchange drains it
            result[prefix + name] = round(statistics.median(runs), 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
