"""``steer profiles fit``: refit the shared prototypes from every user's feedback, with torch.

For each tenant (or ``--tenant``) and the scorer (``--scorer``, default ``features``): read every
user's Bradley-Terry pairs from the ``feedback`` table (since each user's last reset), fit K
prototypes, the population's mixture logits and each user's (mixture, offset) jointly, K chosen
by few-shot accuracy on held-out users unless ``--k`` is given (``steer.methods.profiles.math.fit_prior``),
then store the prior (with a sample of the fitted users: the population a user's posterior is
taken over) and every user's new parameters (their seeds and pins are kept). Run it while the
server is up or down: it writes through the same SQLite file (WAL). New users start from the new prior at once.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from steer.settings import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tenant", help="only this tenant (default: every tenant with feedback)")
    p.add_argument("--scorer", default="features", help="the scorer whose profiles to fit (default: features)")
    p.add_argument("--k", type=int, help="prototypes (default: chosen among 2, 3, 4, 6, 8 on held-out users)")
    p.add_argument("--epochs", type=int, default=400)
    p.add_argument("--min-users", type=int, default=2, help="skip a tenant with fewer users with feedback")
    p.add_argument("--seed", type=int, default=0)


def run_fit(args: argparse.Namespace, settings: Settings) -> int:
    import numpy as np

    from steer.methods.profiles.math import Hyper, fit_prior
    from steer.storage import open_configured
    from steer.storage.profiles import ProfileStore

    db = open_configured(settings)
    store = ProfileStore(db)
    tenants = [args.tenant] if args.tenant else store.tenants()
    hyper = Hyper()
    fitted = 0
    for tenant in tenants:
        attributes, by_user = store.all_pairs(tenant, args.scorer)
        if len(by_user) < args.min_users:
            print(f"{tenant}: {len(by_user)} user(s) with feedback for {args.scorer}; skipped (--min-users)")
            continue
        users = sorted(by_user)
        data = [
            (np.array([d for d, _ in by_user[u]]), np.array([c for _, c in by_user[u]], dtype=np.float64))
            for u in users
        ]
        t0 = time.perf_counter()
        prior, params, _ = fit_prior(
            data,
            attributes,
            k=args.k,
            hyper=hyper,
            epochs=args.epochs,
            seed=args.seed,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
            ids=users,
        )
        prior.fitted_at = time.time()
        store.save_prior(tenant, args.scorer, prior)
        for user, p in zip(users, params, strict=True):
            row = store.user(tenant, user, args.scorer)
            if row is not None and row[0] == attributes:
                p.seeds, p.pinned, p.events, p.since = row[1].seeds, row[1].pinned, row[1].events, row[1].since
            store.save_user(tenant, user, args.scorer, attributes, p)
        fitted += 1
        print(
            f"{tenant}: fitted K={prior.k} prototypes on {prior.users} users, {prior.events} pairs "
            f"({time.perf_counter() - t0:.1f} s)"
        )
    db.close()
    return 0 if fitted or not tenants else 1
