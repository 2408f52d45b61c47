#!/usr/bin/env python3
"""Writes a lead CSV of N rows to stdout, for deploy/bench/leads.sh and
deploy/bench/leads_async.sh.

Every row is valid and unique (email = lead<N>@<domain>), with a quoted name
containing a comma, a non-ASCII name every 7th row, a quoted note with a
newline every 11th row, and two custom columns: about what a CRM export has.

    gen_leads.py N                                   # every row valid and unique
    gen_leads.py N --invalid-every K --duplicate-every M --counts FILE

With --invalid-every, every K-th row is invalid (alternately a malformed
email and an unknown status); with --duplicate-every, every M-th row (that is
not invalid) repeats the address of the nearest earlier row that was
imported. --counts writes "invalid duplicates" to FILE, so a benchmark knows
what the import must report.
"""
import argparse

parser = argparse.ArgumentParser()
parser.add_argument("rows", type=int)
parser.add_argument("--invalid-every", type=int, default=0)
parser.add_argument("--duplicate-every", type=int, default=0)
parser.add_argument("--counts")
args = parser.parse_args()
invalid_every, duplicate_every = args.invalid_every, args.duplicate_every
assert invalid_every in (0,) or invalid_every >= 2
assert duplicate_every in (0,) or duplicate_every >= 2


def invalid(i):
    return invalid_every and i % invalid_every == invalid_every - 1


def duplicate(i):
    return duplicate_every and not invalid(i) and i % duplicate_every == duplicate_every - 1


def email(i):
    return f"lead{i}@example{i % 50}.com"


out = open(1, "w", encoding="utf-8", newline="")
out.write("name,email,phone,source,status,notes,tier,referral_code\r\n")
statuses = ["new", "contacted", "qualified", "converted", "lost"]
sources = ["facebook", "google", "linkedin", "webinar", "referral"]
tiers = ["gold", "silver", "bronze", ""]
counts = [0, 0]
buf = []
for i in range(args.rows):
    name = f'"Doe, Jane {i}"' if i % 7 else f"Zoë Ångström {i}"
    notes = f'"Call back\nabout order {i}"' if i % 11 == 0 else f"Interested in product {i % 100}"
    address, status = email(i), statuses[i % 5]
    if invalid(i):
        counts[0] += 1
        if counts[0] % 2:
            address = f"not-an-address-{i}"
        else:
            status = "bogus"
    elif duplicate(i):
        counts[1] += 1
        first = i - 1
        while invalid(first) or duplicate(first):
            first -= 1
        address = email(first)
    buf.append(
        f"{name},{address},+1 555 {i % 10_000_000:07d},{sources[i % 5]},"
        f"{status},{notes},{tiers[i % 4]},REF{i % 997}\r\n"
    )
    if len(buf) == 10_000:
        out.write("".join(buf))
        buf.clear()
out.write("".join(buf))
out.flush()
if args.counts:
    with open(args.counts, "w") as f:
        f.write(f"{counts[0]} {counts[1]}\n")
