"""The webhook delivery worker: its own process (a service of its own in docker-compose).

    manage.py deliver_webhooks [--once] [--interval 1]

Takes due deliveries, POSTs each signed event, records the attempt, and sleeps when nothing is
due. Several workers may run: each takes rows the others are not holding. SIGTERM and SIGINT
stop it after the delivery in hand.
"""
import signal
import time

from django.core.management.base import BaseCommand
from django.db import DatabaseError, connections

from apps.webhooks.services import deliver_due


class Command(BaseCommand):
    help = "Deliver webhook events to subscribers, retrying with backoff (runs until stopped)."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true",
                            help="try what is due now once, then exit")
        parser.add_argument("--interval", type=float, default=1.0,
                            help="seconds to wait when nothing is due (default 1)")

    def handle(self, *args, once=False, interval=1.0, **options):
        self.running = True
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)
        while self.running:
            try:
                tried = deliver_due()
            except DatabaseError as exc:  # the database restarts: wait, and try again
                self.stderr.write(f"deliver_webhooks: the database is unavailable ({exc})")
                connections.close_all()
                tried = 0
            if once:
                break
            if not tried:
                time.sleep(interval)

    def stop(self, *args):
        self.running = False
