#!/usr/bin/env python
"""Traffic simulator for A/B tests: held-out Adult rows in, true labels back as feedback.

    export ML_API_TOKEN=$(make -s token NAME=ab-test)
    .venv/bin/python ab_test.py --start --stop -n 400

The service is looked for at $ML_API_URL, else at http://127.0.0.1:$PORT (the port ``make run``
was given), else at http://127.0.0.1:8000; --url overrides all three.

Reads rows of adult.test (never the training file), posts each to the endpoint's predict URL with
``status=ab_testing`` (and a user key with --user-keys), PUTs the row's true label as feedback,
then prints each model's accuracy as the client saw it and the test's live results: the
fixed-horizon z-test beside the always-valid (mSPRT) result, which stays valid however often it
is read. --start creates a test between two named models first (--policy, --auto-stop,
--strategy set how it decides, stops and routes); --stop ends it and prints the decision. A test
started with --auto-stop may stop itself during the run: the remaining rows are then not sent.
Failed requests are listed with their status and message, and the exit code is then 1.

Feedback and starting or stopping a test need an API token (--token or $ML_API_TOKEN). A request
the service rate-limits (429) is retried after the wait its Retry-After header names.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import requests
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from research import adult  # noqa: E402
from research.adult import TARGET  # noqa: E402

TIMEOUT = 30
REFERENCE = re.compile(r" \(reference (\w+)\)")
RETRIES_WHEN_LIMITED = 5
TOKEN_ENV = "ML_API_TOKEN"
URL_ENV = "ML_API_URL"
TOKEN_HOWTO = ("pass --token KEY or set ML_API_TOKEN; an operator prints a key with "
               "'make -s token NAME=<username>', or 'manage.py api_token <username> "
               "--create-user' wherever the service's settings are")


def default_url() -> str:
    return os.environ.get(URL_ENV) or f"http://127.0.0.1:{os.environ.get('PORT') or 8000}"


class Failure(Exception):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class Client:
    def __init__(self, url: str, token: str):
        self.url = url.rstrip("/") + "/api/v1"
        self.token = token
        self.waits = 0  # rate-limited answers that were retried
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
            self._local.session.headers["Authorization"] = f"Token {self.token}"
        return self._local.session

    def call(self, method: str, path: str, **kwargs) -> dict:
        what = f"{method} {path}"
        for attempt in range(RETRIES_WHEN_LIMITED + 1):
            try:
                response = self.session.request(method, self.url + path, timeout=TIMEOUT,
                                                **kwargs)
            except requests.RequestException as exc:
                raise Failure(f"{what}: no answer ({exc.__class__.__name__}: {exc})") from None
            if response.status_code != 429 or attempt == RETRIES_WHEN_LIMITED:
                break
            with self._lock:
                self.waits += 1
            time.sleep(min(float(response.headers.get("Retry-After") or 1), TIMEOUT))
        if response.status_code >= 400:
            try:
                message = response.json().get("detail", response.text)
            except ValueError:
                message = response.text[:300]
            raise Failure(f"{what}: {response.status_code} {message}", response.status_code)
        return response.json()


def find_model(client: Client, endpoint: str, spec: str) -> dict:
    """A model by "name" or "name@version"."""
    name, _, version = spec.partition("@")
    params = {"endpoint_name": endpoint, "name": name}
    if version:
        params["version"] = version
    found = client.call("GET", "/mlmodels", params=params)["results"]
    if len(found) != 1:
        versions = ", ".join(m["version"] for m in found) or "none"
        raise Failure(f"model {spec!r} of endpoint {endpoint!r}: {len(found)} match "
                      f"(versions: {versions}); use name@version")
    return found[0]


def running_test(client: Client, endpoint: str) -> dict:
    tests = client.call("GET", "/abtests", params={"endpoint_name": endpoint, "running": "true"})
    if not tests["results"]:
        raise Failure(f"no A/B test is running on endpoint {endpoint!r}; pass --start to start one")
    return tests["results"][0]


def send(client: Client, endpoint: str, index: int, row: dict, user_keys: bool,
         ended: threading.Event) -> dict | None:
    """One row predicted and its true label sent back; None once the test has ended (it may
    stop itself: --auto-stop)."""
    if ended.is_set():
        return None
    features = {k: v for k, v in row.items() if k != TARGET}
    params = {"status": "ab_testing"}
    if user_keys:
        params["user_id"] = f"user-{index}"
    try:
        answer = client.call("POST", f"/{endpoint}/predict", params=params, json=features)
    except Failure as exc:
        # A 404 from predict: the test has stopped (itself, or someone stopped it), if the
        # service lists none running now; any other 404 is a failure.
        if exc.status == 404 and not client.call("GET", "/abtests", params={
                "endpoint_name": endpoint, "running": "true"})["results"]:
            ended.set()
            return None
        raise
    client.call("PUT", f"/mlrequests/{answer['request_id']}", json={"feedback": row[TARGET]})
    model = answer["model"]
    return {"model": f"{model['name']} {model['version']}",
            "correct": answer["label"] == row[TARGET]}


def print_results(test: dict) -> None:
    print(f"\nA/B test {test['id']} ({test['title']!r}, {test['state']}), as the server counts:")
    for m in test["results"]["models"]:
        if m["accuracy"] is None:
            print(f"  {m['name']} {m['version']}: {m['requests']} requests, no feedback")
        else:
            low, high = m["ci95"]
            print(f"  {m['name']} {m['version']}: {m['requests']} requests, {m['feedback']} "
                  f"with feedback, accuracy {m['accuracy']:.3f} (95% CI {low:.3f}-{high:.3f})")
    alpha = test["results"].get("alpha", 0.05)
    level = f"{100 * alpha:g}%"
    for c in test["results"]["comparisons"]:
        verdict = "significant" if c["significant"] else "not significant"
        print(f"  difference {c['difference']:+.3f}")
        print(f"    fixed-horizon z-test (valid read once, at a size fixed in advance): "
              f"95% CI {c['ci95'][0]:+.3f} to {c['ci95'][1]:+.3f}, p-value {c['p_value']:.3g} "
              f"({verdict} at {level})")
        sequential = c.get("sequential")
        if sequential:
            verdict = "significant" if sequential["significant"] else "not significant"
            print(f"    always-valid mSPRT (valid however often it is read): confidence "
                  f"sequence {sequential['cs'][0]:+.3f} to {sequential['cs'][1]:+.3f}, "
                  f"p-value {sequential['p_value']:.3g} ({verdict} at {level})")
    decision = test["results"].get("decision")
    if decision:
        when = "decided" if test["state"] == "stopped" else "if stopped now"
        print(f"  {when} (policy {decision['policy']}): {decision['reason']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=default_url(),
                        help=f"the service's base URL (default ${URL_ENV}, else "
                             f"http://127.0.0.1:$PORT, the port make run uses, else 8000)")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                        help=f"API token for feedback and for starting/stopping tests "
                             f"(default ${TOKEN_ENV})")
    parser.add_argument("--endpoint", default="classifier")
    parser.add_argument("-n", type=int, default=400, help="rows to send (default 400)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.add_argument("--start", action="store_true",
                        help="start a test between --models first")
    parser.add_argument("--models", nargs=2, default=["random forest", "extra trees"],
                        metavar="NAME[@VERSION]", help="the two models --start puts under test")
    parser.add_argument("--split", nargs=2, type=float, default=None, metavar="WEIGHT",
                        help="traffic weights of the two models (default equal)")
    parser.add_argument("--policy", choices=["best", "significant"], default=None,
                        help="with --start: what the stop does; best (the service's default) "
                             "promotes the most accurate model, significant only a model "
                             "significantly better than the incumbent")
    parser.add_argument("--alpha", type=float, default=None,
                        help="with --start: the test's significance level (default 0.05)")
    parser.add_argument("--auto-stop", action="store_true",
                        help="with --start: the test stops itself once the always-valid "
                             "result is significant (or --max-feedback is reached)")
    parser.add_argument("--max-feedback", type=int, default=None,
                        help="with --auto-stop: the feedback budget")
    parser.add_argument("--strategy", choices=["fixed", "thompson"], default=None,
                        help="with --start: fixed split, or Thompson sampling on feedback")
    parser.add_argument("--stop", action="store_true",
                        help="stop the test at the end and print the decision")
    parser.add_argument("--user-keys", action="store_true",
                        help="send a stable user_id per row (sticky routing)")
    parser.add_argument("--seed", type=int, default=None, help="seed for choosing the rows")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder holding adult.test (default $ADULT_DATA_DIR or research/data)")
    args = parser.parse_args(argv)
    if not args.token:
        print(f"error: sending feedback needs an API token: {TOKEN_HOWTO}", file=sys.stderr)
        return 2

    client = Client(args.url, args.token)
    try:
        rows = adult.load("adult.test", args.data_dir)
    except adult.DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not 0 < args.n <= len(rows):
        parser.error(f"-n must be between 1 and {len(rows)}")
    rows = random.Random(args.seed).sample(rows, args.n)

    try:
        if args.start:
            models = [find_model(client, args.endpoint, spec)["id"] for spec in args.models]
            body = {"title": f"{args.models[0]} vs {args.models[1]}", "created_by": "ab_test.py",
                    "mlmodels": models}
            if args.split:
                body["split"] = args.split
            settings = {"policy": args.policy, "alpha": args.alpha, "strategy": args.strategy,
                        "max_feedback": args.max_feedback,
                        "auto_stop": True if args.auto_stop else None}
            body.update({k: v for k, v in settings.items() if v is not None})
            test = client.call("POST", "/abtests", json=body)
            print(f"started A/B test {test['id']}: {test['title']}")
        else:
            test = running_test(client, args.endpoint)
            print(f"using running A/B test {test['id']}: {test['title']}")
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    served, correct, failures = Counter(), Counter(), []
    ended = threading.Event()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        futures = [pool.submit(send, client, args.endpoint, i, row, args.user_keys, ended)
                   for i, row in enumerate(rows)]
        progress = tqdm(as_completed(futures), total=len(futures), unit="req", file=sys.stderr,
                        disable=None)  # None: a bar on a terminal, quiet in a log
        for future in progress:
            try:
                result = future.result()
            except Failure as exc:
                failures.append(str(exc))
                continue
            if result is None:
                continue
            served[result["model"]] += 1
            correct[result["model"]] += result["correct"]

    sent = sum(served.values()) + len(failures)
    print(f"\nsent {sent} rows of adult.test, {len(failures)} failed")
    if ended.is_set():
        print(f"  the test had stopped itself; the other {args.n - sent} rows were not sent")
    if client.waits:
        print(f"  rate-limited {client.waits} times; each waited as Retry-After said and was "
              f"retried")
    for model in sorted(served):
        print(f"  {model}: {served[model]} answers, accuracy {correct[model] / served[model]:.3f}")
    status = 0
    if failures:
        status = 1
        print(f"\n{len(failures)} failed requests:", file=sys.stderr)
        # The same failure carries a new log reference each time: group without it, show one.
        grouped, reference = Counter(), {}
        for message in failures:
            key = REFERENCE.sub("", message)
            grouped[key] += 1
            if match := REFERENCE.search(message):
                reference.setdefault(key, match[1])
        for message, count in grouped.most_common():
            example = ""
            if message in reference:
                example = f" (reference {reference[message]}{', one of them' * (count > 1)})"
            print(f"  {count} x {message}{example}", file=sys.stderr)

    try:
        test = client.call("GET", f"/abtests/{test['id']}")
        print_results(test)
        if test["state"] == "stopped":
            print(f"\nA/B test {test['id']} stopped itself ({test['results']['stopped_by']}):")
            print(test["summary"])
        elif args.stop:
            stopped = client.call("POST", f"/stop_ab_test/{test['id']}",
                                  json={"stopped_by": "ab_test.py"})
            print(f"\nstopped A/B test {stopped['id']}: "
                  f"{stopped['results']['decision']['reason']}")
            print(stopped["summary"])
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
