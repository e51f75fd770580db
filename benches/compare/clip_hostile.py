#!/usr/bin/env python3
"""Hostile pictures against `edgecut serve --http` with a CLIP model: the server's peak resident
memory (VmHWM, from /proc) after each kind of attack, every answer's status, and whether the
server still answers `/health` and a normal picture after them.

Pictures (as base64 data URLs in `/v1/embeddings`): truncated PNG and JPEG, a 30000x30000 PNG
header, an 8000x8000 compression bomb (64 megapixels in ~0.1 MB, over the 40-megapixel limit),
a 6300x6300 picture of zeros (40 megapixels in ~0.1 MB: within the limits, so it is decoded),
wrong magic, zero bytes, a 16000x1 strip, and 8 clients sending the 40-megapixel picture at once.

    ~/.cache/edgecut/refvenv/bin/python benches/compare/clip_hostile.py [--model clip.gguf]

Needs pillow (the refvenv) and target/release/edgecut; by default the tiny CLIP checkpoint of
the tests, converted here.
"""
import argparse
import base64
import concurrent.futures
import io
import json
import os
import re
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EDGECUT = os.path.join(ROOT, "target/release/edgecut")


def png(im, **kw):
    b = io.BytesIO()
    im.save(b, "PNG", **kw)
    return b.getvalue()


def header(w, h):
    import struct
    import zlib
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))


def url(b, media="image/png"):
    return f"data:{media};base64," + base64.b64encode(b).decode()


def post(base, model, item):
    body = json.dumps({"model": model, "input": [item]}).encode()
    req = urllib.request.Request(base + "/v1/embeddings", body, {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, ""
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())["error"]["message"]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        s = f.read()
    peak = int(re.search(r"VmHWM:\s+(\d+)", s).group(1)) / 1024
    now = int(re.search(r"VmRSS:\s+(\d+)", s).group(1)) / 1024
    return peak, now


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    model = a.model
    if not model:
        model = os.path.join(tmp, "clip-tiny.gguf")
        subprocess.run([EDGECUT, "convert", os.path.join(ROOT, "tests/fixtures/clip-tiny"), "-o", model,
                        "--type", "q8_0"], check=True, stdout=subprocess.DEVNULL)
    name = os.path.basename(model)[:-5]
    p = subprocess.Popen([EDGECUT, "serve", "--http", "127.0.0.1:0", "--device", "cpu", "-m", model],
                         stderr=subprocess.PIPE, text=True)
    base = None
    while base is None:
        line = p.stderr.readline()
        m = re.match(r"serve: HTTP API on (\S+)", line)
        if m:
            base = m.group(1)
    while "ready" not in line:
        line = p.stderr.readline()
    good = png(Image.open(os.path.join(ROOT, "tests/fixtures/clip-images/02-coffee.png")))
    jpeg = open(os.path.join(ROOT, "tests/fixtures/clip-images/03-chelsea.jpg"), "rb").read()
    zeros40 = png(Image.new("L", (6300, 6300)), optimize=True)
    cases = [
        ("a normal picture", url(good)),
        ("zero bytes", "data:image/png;base64,"),
        ("wrong magic (GIF)", url(b"GIF89a\x01\x00\x01\x00", "image/gif")),
        ("truncated PNG", url(good[: len(good) // 2])),
        ("truncated JPEG", url(jpeg[: len(jpeg) // 3], "image/jpeg")),
        ("30000x30000 PNG header", url(header(30000, 30000))),
        ("8000x8000 compression bomb", url(png(Image.new("L", (8000, 8000)), optimize=True))),
        ("16000x1 strip", url(png(Image.new("L", (16000, 1))))),
        (f"6300x6300 zeros (40 MP, {len(zeros40) // 1024} KB)", url(zeros40)),
    ]
    rows = []
    base_peak, _ = rss_mb(p.pid)
    print(f"server loaded: peak RSS {base_peak:.0f} MB")
    for what, item in cases:
        t = time.perf_counter()
        status, msg = post(base, name, {"image": item})
        ms = (time.perf_counter() - t) * 1e3
        peak, now = rss_mb(p.pid)
        rows.append((what, status, msg, ms, peak, now))
        print(f"{what:40s} {status} {ms:7.0f} ms  peak {peak:6.0f} MB  now {now:6.0f} MB  {msg[:90]}")
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        t = time.perf_counter()
        statuses = list(ex.map(lambda _: post(base, name, {"image": url(zeros40)})[0], range(8)))
        ms = (time.perf_counter() - t) * 1e3
    peak, now = rss_mb(p.pid)
    print(f"{'8 clients x the 40 MP picture':40s} {statuses} {ms:7.0f} ms  peak {peak:6.0f} MB  now {now:6.0f} MB")
    health = urllib.request.urlopen(base + "/health", timeout=10).status
    status, _ = post(base, name, {"image": url(good)})
    print(f"after all that: /health {health}, a normal picture {status}")
    p.terminate()
    p.wait()


if __name__ == "__main__":
    main()
