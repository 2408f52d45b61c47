#!/usr/bin/env python3
"""Writes an analytics CSV to stdout, for deploy/bench/analytics_import.sh:
DAYS days from 2000-01-01 for each of SOURCES sources (one row per day and
source), the five core metrics and one custom metric, as an ad platform's
daily report has them (cost with micro-units every 3rd row).

    gen_analytics.py DAYS SOURCES
"""
import datetime
import sys

days, sources = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout
out.write("date,source,impressions,clicks,conversions,cost,revenue,engagement_rate\n")
start = datetime.date(2000, 1, 1)
buf = []
for d in range(days):
    date = (start + datetime.timedelta(days=d)).isoformat()
    for s in range(sources):
        i = d * sources + s
        cost = f"{i % 900}.{i % 1_000_000:06d}" if i % 3 == 0 else f"{i % 900}.{i % 100:02d}"
        buf.append(
            f"{date},source{s},{1000 + i % 50_000},{10 + i % 700},{i % 40},{cost},"
            f"{i % 5000}.00,0.0{i % 97:02d}\n"
        )
    if len(buf) >= 10_000:
        out.write("".join(buf))
        buf.clear()
out.write("".join(buf))
