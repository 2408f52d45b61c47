#!/usr/bin/env python3
"""Writes a lead CSV of N rows to stdout, for deploy/bench/leads.sh.

Every row is valid and unique (email = lead<N>@<domain>), with a quoted name
containing a comma, a non-ASCII name every 7th row, a quoted note with a
newline every 11th row, and two custom columns: about what a CRM export has.
"""
import sys

rows = int(sys.argv[1])
out = sys.stdout
out.write("name,email,phone,source,status,notes,tier,referral_code\r\n")
statuses = ["new", "contacted", "qualified", "converted", "lost"]
sources = ["facebook", "google", "linkedin", "webinar", "referral"]
tiers = ["gold", "silver", "bronze", ""]
buf = []
for i in range(rows):
    name = f'"Doe, Jane {i}"' if i % 7 else f"Zoë Ångström {i}"
    notes = f'"Call back\nabout order {i}"' if i % 11 == 0 else f"Interested in product {i % 100}"
    buf.append(
        f"{name},lead{i}@example{i % 50}.com,+1 555 {i % 10_000_000:07d},{sources[i % 5]},"
        f"{statuses[i % 5]},{notes},{tiers[i % 4]},REF{i % 997}\r\n"
    )
    if len(buf) == 10_000:
        out.write("".join(buf))
        buf.clear()
out.write("".join(buf))
