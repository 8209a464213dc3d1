"""The job of scripts/jobs-peers.sh on Celery 5: append one line to a file.

Celery's defaults otherwise: the prefork pool with one process per core,
acks_late off, no result backend. The broker is the bench's Redis
(JOBS_PEERS_REDIS_URL); the file is JOBS_PEERS_LOG.
"""
import os

from celery import Celery

app = Celery("celery_app", broker=os.environ["JOBS_PEERS_REDIS_URL"])
# Celery 5's behaviour, said out loud (else it warns at each start that 6.0 changes it).
app.conf.broker_connection_retry_on_startup = True
LOG = os.environ["JOBS_PEERS_LOG"]


@app.task
def write_line(i):
    # Opened for each job, as afterward's demo job does.
    with open(LOG, "a") as f:
        f.write(f"celery {i} done\n")
