"""Builds a parkcast training matrix in shards on Apache Spark.

parkcast does not schedule work across machines itself: Spark places the shards on its executors,
retries a shard whose task fails (spark.task.maxFailures) and reports the job. Each task runs the
parkcast binary on one shard:

    parkcast features build --warehouse WH --matrix DIR --shard I/N

which reads only its lot groups from the warehouse (which every worker must see, e.g. on a shared
file system or object store mount) and writes their rows as Parquet parts into DIR, then records
itself as finished. `parkcast train --matrix DIR` (same protocol flags as the plan) then fits on
the parts, in the same order one machine would have built them.

Usage (plan first, with the flags the training run will use):

    parkcast features plan -w WH --source NAME --out DIR
    spark-submit --master spark://HOST:7077 scripts/spark/features.py \\
        --parkcast /path/to/parkcast --warehouse WH --matrix DIR --shards 64
    parkcast train -w WH --source NAME --matrix DIR

On one machine, `--master local-cluster[2,1,1024]` starts two executor processes on loopback
(what the test command runs).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time

from pyspark import SparkConf, SparkContext


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parkcast", required=True, help="the parkcast binary, on every worker")
    parser.add_argument("--warehouse", required=True, help="the warehouse folder, seen by every worker")
    parser.add_argument("--matrix", required=True, help="the matrix folder holding the plan")
    parser.add_argument("--shards", type=int, required=True, help="how many shards (tasks)")
    parser.add_argument("--master", help="Spark master URL (default: spark-submit's)")
    return parser.parse_args(argv)


def build_shard(args, shard):
    """Runs one shard; raises (so Spark retries and reports) when the binary fails."""
    started = time.time()
    command = [
        args.parkcast,
        "--quiet",
        "features",
        "build",
        "--warehouse",
        args.warehouse,
        "--matrix",
        args.matrix,
        "--shard",
        f"{shard}/{args.shards}",
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"shard {shard}/{args.shards} failed with exit code {done.returncode}:\n{done.stderr[-4000:]}"
        )
    return {
        "shard": shard,
        "host": socket.gethostname(),
        # The Python workers of one executor share a parent: distinct parents are distinct executors.
        "executor_process": os.getppid(),
        "seconds": round(time.time() - started, 1),
        "summary": done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "",
    }


def main(argv):
    args = parse_args(argv)
    if args.shards < 1:
        sys.exit("--shards must be at least 1")
    conf = SparkConf().setAppName("parkcast features build")
    if args.master:
        conf = conf.setMaster(args.master)
    context = SparkContext(conf=conf)
    context.setLogLevel("WARN")
    try:
        results = (
            context.parallelize(range(args.shards), args.shards)
            .map(lambda shard: build_shard(args, shard))
            .collect()
        )
    finally:
        context.stop()
    for result in sorted(results, key=lambda result: result["shard"]):
        print(json.dumps(result), flush=True)
    executors = len({(result["host"], result["executor_process"]) for result in results})
    print(f"built {len(results)} shards on {executors} executor process(es)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
