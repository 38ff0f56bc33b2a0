"""Delete the requests older than N days, in batches; with --archive, write them to a file first.

    python manage.py prune_requests --older-than-days 90
    python manage.py prune_requests --older-than-days 90 --archive /backup/requests.jsonl.gz
    python manage.py prune_requests --older-than-days 90 --dry-run

Each batch (--batch-size, default 5000) is its own short transaction, so predictions and
feedback go on meanwhile; a request's shadow predictions go with it; requests of a running A/B
test are kept until the test stops. The archive is gzip JSON lines (one request a line, with its
shadow predictions), each batch on disk before it is deleted: after a crash, run the same command
again (same --archive file): it cuts an unfinished batch off the file's end and goes on, and a
request may then be in the archive twice (keep the last line of an id). The logic is in
apps/endpoints/retention.py.
"""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.endpoints import retention
from apps.endpoints.exceptions import InvalidInput


class Command(BaseCommand):
    help = "Delete (or archive, then delete) requests older than N days, in batches."

    def add_arguments(self, parser):
        parser.add_argument("--older-than-days", type=int, required=True, metavar="N",
                            help="delete requests created more than N days ago (N >= 1)")
        parser.add_argument("--batch-size", type=int, default=retention.DEFAULT_BATCH_SIZE,
                            help=f"requests per transaction (default "
                                 f"{retention.DEFAULT_BATCH_SIZE}, at most "
                                 f"{retention.MAX_BATCH_SIZE})")
        parser.add_argument("--archive", type=Path, metavar="FILE.jsonl.gz",
                            help="append the requests to this gzip JSON-lines file before "
                                 "deleting them")
        parser.add_argument("--dry-run", action="store_true",
                            help="delete and write nothing; print what would be deleted")

    def handle(self, *args, older_than_days, batch_size, archive=None, dry_run=False,
               **options):
        if older_than_days is None or older_than_days < 1:
            raise CommandError(f"--older-than-days must be at least 1 (got {older_than_days})")
        try:
            result = retention.mlrequests_prune(
                older_than_days=older_than_days, batch_size=batch_size, archive=archive,
                dry_run=dry_run, on_batch=self._report(dry_run))
        except InvalidInput as exc:
            raise CommandError(exc.detail) from None

        if result.archive_cut_bytes:
            self.stdout.write(f"cut {result.archive_cut_bytes} bytes of an unfinished batch off "
                              f"the end of {archive} (its requests had not been deleted)")
        verb = "would delete" if dry_run else "deleted"
        line = (f"{verb} {result.requests} requests created before "
                f"{result.cutoff.isoformat(timespec='seconds')} and their "
                f"{result.shadow_predictions} shadow predictions in {len(result.batches)} "
                f"batches ({sum(b.seconds for b in result.batches):.1f} s)")
        if result.archive:
            line += f"; archived {result.archived} to {result.archive}"
        self.stdout.write(line)
        if result.kept_running:
            self.stdout.write(f"kept {result.kept_running} older requests of running A/B tests "
                              f"(their live results count them; pruned once the test stops)")
        if dry_run:
            self.stdout.write("dry run: nothing was deleted or archived")

    def _report(self, dry_run: bool):
        verb = "would delete" if dry_run else "deleted"

        def report(batch: retention.PruneBatch) -> None:
            archived = f", archived {batch.archived}" if batch.archived else ""
            self.stdout.write(
                f"batch {batch.number}: {verb} {batch.requests} requests and "
                f"{batch.shadow_predictions} shadow predictions{archived}, created up to "
                f"{batch.newest.isoformat(timespec='seconds')} ({batch.seconds:.3f} s)")
            self.stdout.flush()  # a log follows the batches as they commit
        return report
