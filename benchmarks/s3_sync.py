"""Time tritonrepo push/pull against `aws s3 sync` and `s5cmd` on a local moto S3 server; prints a markdown table.

Every tool runs the same way: as its own command line (start-up included), against one moto server that runs in a
separate process, each on its own bucket."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3

BIN = Path(sys.executable).parent
CHUNK = 64 << 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_tree(root: Path, large_mb: int, small_files: int) -> int:
    """One large file of mostly-random bytes plus many 1-4 KiB files in nested folders; returns total bytes."""
    block = bytearray(os.urandom(CHUNK))
    remaining = large_mb << 20
    (root / "big_model" / "1").mkdir(parents=True)
    with open(root / "big_model" / "1" / "model.bin", "wb") as handle:
        index = 0
        while remaining > 0:
            block[:8] = index.to_bytes(8, "little")  # every chunk differs, so no two parts are identical
            size = min(CHUNK, remaining)
            handle.write(memoryview(block)[:size])
            remaining -= size
            index += 1
    seed = os.urandom(4096).hex()
    for i in range(small_files):
        folder = root / f"model_{i // 20}" / "1"
        folder.mkdir(parents=True, exist_ok=True)
        size = 1024 + (i * 997) % 3072
        (folder / f"file_{i % 20}.txt").write_text((f"{i}:" + seed)[:size])
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run(*args: str) -> str:
    return subprocess.run([str(a) for a in args], check=True, stdout=subprocess.PIPE, text=True).stdout


def start_moto(port: int, log: Path) -> subprocess.Popen:
    server = subprocess.Popen(
        [BIN / "moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
    for _ in range(100):
        try:
            s3.list_buckets()
            return server
        except Exception:  # not listening yet
            time.sleep(0.1)
    server.terminate()
    raise SystemExit(f"moto_server did not start; see {log}")


def new_bucket(s3, name: str) -> str:
    s3.create_bucket(Bucket=name)
    return name


def empty_bucket(s3, name: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys})
    s3.delete_bucket(Bucket=name)


def bench_tritonrepo(src: Path, dst: Path, url: str, endpoint: str, extra: dict) -> tuple[float, float]:
    tool = (BIN / "tritonrepo", "-q")
    flags = ("--endpoint-url", endpoint, "--json")
    push_flags = (*flags, *os.environ.get("TRITONREPO_BENCH_PUSH_ARGS", "").split())
    push_s = timed(lambda: run(*tool, "push", src, url, *push_flags))
    pull_s = timed(lambda: run(*tool, "pull", url, dst, *flags))
    extra["tritonrepo no-op re-push"] = timed(lambda: run(*tool, "push", src, url, *flags))
    extra["tritonrepo no-op re-pull"] = timed(lambda: run(*tool, "pull", url, dst, *flags))
    changed = src / "model_0" / "1" / "file_0.txt"
    original = changed.read_bytes()
    changed.write_bytes(original[:-1] + b"!")
    started = time.perf_counter()
    summary = json.loads(run(*tool, "push", src, url, *flags))
    extra["tritonrepo one-small-file change push"] = time.perf_counter() - started
    extra["one-small-file change"] = f"{summary['files_moved']} file(s), {summary['bytes_moved']} bytes moved"
    changed.write_bytes(original)
    return push_s, pull_s


def bench_aws(src: Path, dst: Path, url: str, endpoint: str, extra: dict) -> tuple[float, float]:
    aws = (BIN / "aws", "s3", "sync", "--endpoint-url", endpoint, "--only-show-errors")
    push_s = timed(lambda: run(*aws, src, url))
    pull_s = timed(lambda: run(*aws, url, dst))
    extra["aws s3 sync no-op re-push"] = timed(lambda: run(*aws, src, url))
    return push_s, pull_s


def bench_s5cmd(src: Path, dst: Path, url: str, endpoint: str, extra: dict) -> tuple[float, float]:
    s5 = (BIN / "s5cmd", "--endpoint-url", endpoint)
    push_s = timed(lambda: run(*s5, "cp", f"{src}/*", f"{url}/"))
    pull_s = timed(lambda: run(*s5, "cp", f"{url}/*", f"{dst}/"))
    extra["s5cmd sync no-op re-push"] = timed(lambda: run(*s5, "sync", f"{src}/", f"{url}/"))
    return push_s, pull_s


TOOLS = {"tritonrepo": (None, bench_tritonrepo), "aws s3 sync": ("aws", bench_aws), "s5cmd cp": ("s5cmd", bench_s5cmd)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--large-mb", type=int, default=1536, help="size of the one large file (MiB)")
    parser.add_argument("--small-files", type=int, default=2000, help="number of 1-4 KiB files")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of: " + ", ".join(TOOLS))
    parser.add_argument("--push-args", default="", help="extra flags for tritonrepo push, e.g. '--concurrency 8'")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.tools.split(",")]
    unknown = sorted(set(chosen) - set(TOOLS))
    if unknown:
        parser.error(f"unknown tools: {', '.join(unknown)}")
    os.environ["TRITONREPO_BENCH_PUSH_ARGS"] = args.push_args
    work = Path(tempfile.mkdtemp(prefix="s3bench-"))
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(work / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(work / "no-credentials"),
        TRITONREPO_CACHE=str(work / "cache"),  # tritonrepo's digest memo starts empty, as on a fresh machine
    )
    port = free_port()
    server = start_moto(port, work / "moto.log")
    endpoint = f"http://127.0.0.1:{port}"
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        src = work / "src"
        src.mkdir()
        print(f"making {args.large_mb} MiB + {args.small_files} small files in {src} ...", file=sys.stderr)
        total = make_tree(src, args.large_mb, args.small_files)
        results: dict[str, tuple[float, float] | str] = {}
        extra: dict[str, float | str] = {}
        for number, (name, (exe, bench)) in enumerate(TOOLS.items()):
            if name not in chosen:
                continue
            if exe and not (BIN / exe).exists() and not shutil.which(exe):
                results[name] = "not installed"
                continue
            print(f"timing {name} ...", file=sys.stderr)
            bucket = new_bucket(s3, f"bench-{number}")
            dst = work / f"pulled-{number}"
            try:
                results[name] = bench(src, dst, f"s3://{bucket}/repo", endpoint, extra)
            except (OSError, subprocess.CalledProcessError) as error:
                results[name] = f"failed: {error}"
            finally:
                shutil.rmtree(dst, ignore_errors=True)
                empty_bucket(s3, bucket)
        print_tables(results, extra, total, args)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


def print_tables(results: dict, extra: dict, total: int, args) -> None:
    mb = total / 1e6
    print(
        f"\nTree: one {args.large_mb} MiB file + {args.small_files} small files = {mb:.1f} MB; "
        f"moto S3 on 127.0.0.1, {os.cpu_count()} CPUs.\n"
    )
    print("| tool | push s | push MB/s | pull s | pull MB/s | tritonrepo/tool push | tritonrepo/tool pull |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    ours = results.get("tritonrepo")
    for name, result in results.items():
        if isinstance(result, str):
            print(f"| {name} | {result} | | | | | |")
            continue
        push_s, pull_s = result
        ratios = (f"{ours[0] / push_s:.2f}", f"{ours[1] / pull_s:.2f}") if isinstance(ours, tuple) else ("-", "-")
        print(
            f"| {name} | {push_s:.2f} | {mb / push_s:.1f} | {pull_s:.2f} | {mb / pull_s:.1f} | "
            f"{ratios[0]} | {ratios[1]} |"
        )
    print("\n| re-sync | result |")
    print("|---|---:|")
    for name, value in extra.items():
        print(f"| {name} | {value if isinstance(value, str) else f'{value:.2f} s'} |")


if __name__ == "__main__":
    main()
