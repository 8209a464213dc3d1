"""The job of scripts/jobs-peers.sh on Dramatiq 2: append one line to a file.

Dramatiq's defaults otherwise (the `dramatiq` command: one process per core,
8 threads each; its default middleware). The broker is the bench's Redis
(JOBS_PEERS_REDIS_URL); the file is JOBS_PEERS_LOG.
"""
import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

dramatiq.set_broker(RedisBroker(url=os.environ["JOBS_PEERS_REDIS_URL"]))
LOG = os.environ["JOBS_PEERS_LOG"]


@dramatiq.actor
def write_line(i):
    # Opened for each job, as afterward's demo job does.
    with open(LOG, "a") as f:
        f.write(f"dramatiq {i} done\n")
