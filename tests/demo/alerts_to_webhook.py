#!/usr/bin/env python3
"""Forward optidb alerts to a webhook or chat, from outside the database.

    alerts_to_webhook.py CONNINFO WEBHOOK_URL [--count N]

LISTENs on the optidb_alerts channel and POSTs each notification as JSON
{"text": "...", "alert": {payload}}: the "text" field is what Slack and Mattermost incoming
webhooks show; "alert" carries optidb's payload for anything else. Reconnects after a lost
connection; --count stops after N alerts (for tests). Needs psycopg 3 (`pip install psycopg`).
"""

import argparse
import json
import sys
import time
import urllib.request

import psycopg


def summary(alert):
    subject = f" ({alert['subject']})" if alert.get("subject") else ""
    value = alert.get("value")
    shown = "none" if value is None else f"{value:.2f}"
    return (f"[{alert['severity']}] optidb alert {alert['alert_id']} {alert['event']}: "
            f"{alert['rule']}{subject} {alert['metric']} = {shown} "
            f"{alert['comparison']} {alert['threshold']}")


def post(url, alert):
    body = json.dumps({"text": summary(alert), "alert": alert}).encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def forward(conninfo, url, count=None):
    sent = 0
    while count is None or sent < count:
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute("LISTEN optidb_alerts")
                for note in conn.notifies():
                    try:
                        post(url, json.loads(note.payload))
                        sent += 1
                    except Exception as error:  # keep listening: one bad POST is not fatal
                        print(f"alerts_to_webhook: POST failed: {error}", file=sys.stderr)
                    if count is not None and sent >= count:
                        return
        except psycopg.OperationalError as error:
            print(f"alerts_to_webhook: {error}; reconnecting in 5 s", file=sys.stderr)
            time.sleep(5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("conninfo", help='libpq connection string, e.g. "dbname=shop"')
    parser.add_argument("url", help="webhook URL to POST each alert to")
    parser.add_argument("--count", type=int, help="stop after this many alerts")
    args = parser.parse_args()
    forward(args.conninfo, args.url, args.count)


if __name__ == "__main__":
    main()
