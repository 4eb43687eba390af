"""Builds the fuzz seed corpus from the request cases.

    python fuzz/seed.py [SHARED_CASES_DIR]

The project's own cases (tests/cases/*.cases) are always used; the shared conformance cases
(../shared/conformance/cases beside the repository, or SHARED_CASES_DIR) are added when they
are there, decoded with that harness's own decoder, so the seeds are exactly the bytes the
harness sends. Writes fuzz/corpus/request/* (each case's bytes, prefixed by the flags byte the
request target reads: 0 = default limits, plus one copy with the permissive modes on) and
fuzz/corpus/proxy/* (the cases that open with a PROXY header, plus a few v1/v2 headers built
here).
"""
import hashlib
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS_DIR = os.path.join(HERE, "..", "tests")
DEFAULT_CASES = os.path.join(HERE, "..", "..", "shared", "conformance", "cases")


def write(folder, data):
    os.makedirs(folder, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def proxy_v2(family_proto, addrs, command=0x21):
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    return sig + bytes([command, family_proto]) + struct.pack(">H", len(addrs)) + addrs


def add_case(request_dir, proxy_dir, data):
    write(request_dir, b"\x00" + data)
    write(request_dir, b"\x1f" + data)
    if data.startswith(b"PROXY") or data.startswith(b"\r\n\r\n\x00"):
        write(proxy_dir, data)


def main():
    shared = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_CASES)
    request_dir = os.path.join(HERE, "corpus", "request")
    proxy_dir = os.path.join(HERE, "corpus", "proxy")
    sys.path.insert(0, TESTS_DIR)
    from http_cases import read_all  # the project's case reader

    own = read_all()
    for _, case in own:
        add_case(request_dir, proxy_dir, case.data)
    count = 0
    if os.path.isdir(shared):
        sys.path.insert(0, os.path.dirname(shared))
        from run import decode_http  # the shared harness's decoder

        for root, _, files in os.walk(shared):
            for name in sorted(files):
                if not name.endswith(".http"):
                    continue
                with open(os.path.join(root, name), "rb") as f:
                    add_case(request_dir, proxy_dir, decode_http(f.read()))
                count += 1
    else:
        print(f"seed.py: no shared conformance cases at {shared}; using the project's own",
              file=sys.stderr)
    write(request_dir, b"\x00GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    write(request_dir, b"\x00POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nX: y\r\n\r\n")
    write(proxy_dir, b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n\r\n")
    write(proxy_dir, b"PROXY TCP6 ::1 ::1 56324 443\r\n")
    write(proxy_dir, b"PROXY UNKNOWN\r\n")
    write(proxy_dir, proxy_v2(0x11, bytes([10, 0, 0, 1, 10, 0, 0, 2]) + struct.pack(">HH", 1234, 80)))
    write(proxy_dir, proxy_v2(0x21, bytes(15) + b"\x01" + bytes(15) + b"\x02" + struct.pack(">HH", 1, 2)))
    write(proxy_dir, proxy_v2(0x00, b"", command=0x20))
    print(f"seed.py: {len(own)} own cases and {count} shared cases -> {request_dir}, {proxy_dir}")


if __name__ == "__main__":
    main()
