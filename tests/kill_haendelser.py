"""`pensionstraek haendelser P` that kills itself (SIGKILL) right after the n-th call of one of
its steps, for the crash tests (tests/test_beskeder_amqp.py):

    python -m tests.kill_haendelser {commit|publish|record} N P

commit: the outbox's intent of a period written; publish: a message handed to the broker;
record: a group of answers recorded. Everything else is the real command."""

import os
import signal
import sys
from collections import Counter

import pika

from pipelines import beskeder
from pipelines.cli import main


def dying(original, n: int):
    calls = Counter()

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= n:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    return wrapper


if __name__ == "__main__":
    point, n, periode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    beskeder.MessageBook.group_size = 5  # more commit points in a small period
    if point == "commit":
        beskeder.commit = dying(beskeder.commit, n)
    elif point == "record":
        beskeder.MessageBook.record = dying(beskeder.MessageBook.record, n)
    elif point == "publish":
        channel = pika.adapters.blocking_connection.BlockingChannel
        channel.basic_publish = dying(channel.basic_publish, n)
    else:
        raise SystemExit(f"unknown point {point!r}")
    sys.exit(main(["haendelser", periode]))
