#!/usr/bin/env python3
"""Runs a flow-log query (a .sql file here) with DuckDB over natgw's JSON-lines flow log.

    query.py FLOW_LOG.jsonl QUERY.sql [--json]

The flow log (flow_log.file, rotated files too: a glob such as 'flows.jsonl*') is the
view `flow_log`, one column per field (`"source.address"`, `"natgw.flow.action"`, ...).
Prints a table, or with --json one JSON array of rows.
"""
import json
import sys

import duckdb


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    log, sql_file = argv[1], argv[2]
    con = duckdb.connect()
    path = log.replace("'", "''")
    con.execute(
        f"CREATE VIEW flow_log AS SELECT * FROM read_json('{path}', format = 'newline_delimited', "
        "union_by_name = true, compression = 'auto_detect')"
    )
    rel = con.sql(open(sql_file).read())
    if "--json" in argv[3:]:
        cols = rel.columns
        print(json.dumps([dict(zip(cols, row)) for row in rel.fetchall()], default=str))
    else:
        rel.show(max_rows=1000, max_width=200)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
