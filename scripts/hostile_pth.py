#!/usr/bin/env python3
"""Hostile torch.save files for the reader's tests (tests/integration/hostile.rs): one file of each class
of attack the reader must refuse, in each format where it applies, written byte by byte
(no torch needed to write them), and a manifest that says what each must be refused for.

Writes into OUT:

  clean.zip.pth, clean.legacy.pth   the state_dict every payload file starts from, as plain as
                                    torch.save writes it (the tool and torch.load must both read
                                    these: the builder below is checked on them)
  torch.zip.pth, torch.legacy.pth   the same written by torch.save, where PyTorch is installed
  <class>.<format>.pth              one attack each (the manifest lists them)
  manifest.json                     [{"file", "reason", "torch_refuses", "read"}]: "reason" is a
                                    phrase the tool's error must hold; "read" is true for the two
                                    the reader reads (then refused as not fitting the network:
                                    a key with CR and ESC, values just under the bound);
                                    "torch_refuses" is true where
                                    torch.load(weights_only=True) refuses the file too (the
                                    files built to use time or memory are not loaded by torch)

Classes: payloads whose results never reach the returned object (dropped by POP or
POP_MARK, kept only in the memo, the first value of a duplicated key, in _rebuild_tensor_v2's
hooks and metadata, in _rebuild_parameter's hooks, in _rebuild_from_type_v2's type and state,
in a persistent id's location, in a BUILD state applied to a dict, in the legacy format's
four other pickles), a pickled nn.Module and os.system dressed up as one; time (a deflated
storage inflated again for each of 4096 views, a list of 10^6 items under a 60 MiB key);
memory (30 million EMPTY_LIST opcodes, 16 tensors under a 50 MiB key, a tar file whose storages
member is a sparse 3 GiB hole); the terminal (a class name with CR and ESC).

With --torch-load FILE…, loads each file with torch.load(weights_only=True) instead and prints
one JSON object: each file's error, or null where PyTorch read it.

Usage: python3 scripts/hostile_pth.py --out DIR
       python3 scripts/hostile_pth.py --torch-load FILE...
"""

import argparse
import io
import json
import os
import random
import struct
import tarfile
import zipfile
import zlib

# --- pickle opcodes, protocol 2 -------------------------------------------------------------

PROTO2 = b"\x80\x02"
STOP = b"."
MARK = b"("
POP = b"0"
POP_MARK = b"1"
TUPLE = b"t"
TUPLE1 = b"\x85"
REDUCE = b"R"
BUILD = b"b"
SETITEMS = b"u"
SETITEM = b"s"
EMPTY_DICT = b"}"
EMPTY_LIST = b"]"
EMPTY_TUPLE = b")"
APPENDS = b"e"
NEWFALSE = b"\x89"
NEWTRUE = b"\x88"
NONE = b"N"
BINPERSID = b"Q"
MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001


def s(text):
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(text)) + text


def i(n):
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if 0 <= n < 65536:
        return b"M" + struct.pack("<H", n)
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def g(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def tup(*items):
    return MARK + b"".join(items) + TUPLE


ORDERED_DICT = g("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE
# The call every payload makes: os.system("true"), which would create nothing if run.
PAYLOAD = g("posix", "system") + s("true") + TUPLE1 + REDUCE


def pid(key, numel, location=None, legacy=False):
    fields = [s("storage"), g("torch", "FloatStorage"), s(key), location or s("cpu"), i(numel)]
    if legacy:
        fields.append(NONE)
    return tup(*fields) + BINPERSID


def tensor(key, numel, legacy=False, hooks=None, metadata=None, location=None):
    args = [
        pid(key, numel, location, legacy),
        i(0),
        tup(i(numel)),
        tup(i(1)),
        NEWFALSE,
        hooks if hooks is not None else ORDERED_DICT,
    ]
    if metadata is not None:
        args.append(metadata)
    return g("torch._utils", "_rebuild_tensor_v2") + tup(*args) + REDUCE


def state_dict(entries, before=b"", build=None):
    """An OrderedDict of (key bytes, value bytes); `before` goes in front of the entries
    (inside the SETITEMS mark); `build`, if given, is BUILD state applied to the dict."""
    body = ORDERED_DICT
    if build is not None:
        body += build + BUILD
    body += MARK + before + b"".join(s(k) + v for k, v in entries) + SETITEMS
    return body


WEIGHTS = {"w": [1.0, 2.0, 3.0, 4.0], "b": [0.5, -0.5]}


def plain_entries(legacy=False, **kw):
    return [(k, tensor(str(n), len(v), legacy, **kw)) for n, (k, v) in enumerate(WEIGHTS.items())]


def storages():
    return {str(n): struct.pack(f"<{len(v)}f", *v) for n, v in enumerate(WEIGHTS.values())}


def write_zip(path, pkl, data=None, deflate=()):
    data = storages() if data is None else data
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl, zipfile.ZIP_DEFLATED if "data.pkl" in deflate else zipfile.ZIP_STORED)
        z.writestr("archive/byteorder", "little")
        for key, raw in data.items():
            z.writestr(f"archive/data/{key}", raw, zipfile.ZIP_DEFLATED if key in deflate else zipfile.ZIP_STORED)
        z.writestr("archive/version", "3\n")


def legacy_bytes(main, magic=None, protocol=None, sys_info=None, keys=None, data=None):
    data = storages() if data is None else data
    out = io.BytesIO()
    out.write(magic or PROTO2 + i(MAGIC) + STOP)
    out.write(protocol or PROTO2 + i(PROTOCOL_VERSION) + STOP)
    out.write(
        sys_info
        or PROTO2
        + EMPTY_DICT
        + MARK
        + s("protocol_version")
        + i(PROTOCOL_VERSION)
        + s("little_endian")
        + NEWTRUE
        + s("type_sizes")
        + EMPTY_DICT
        + MARK
        + s("short")
        + i(2)
        + s("int")
        + i(4)
        + s("long")
        + i(4)
        + SETITEMS
        + SETITEMS
        + STOP
    )
    out.write(PROTO2 + main + STOP)
    names = sorted(data)
    out.write(keys or PROTO2 + EMPTY_LIST + MARK + b"".join(s(k) for k in names) + APPENDS + STOP)
    for k in names:
        raw = data[k]
        out.write(struct.pack("<q", len(raw) // 4))
        out.write(raw)
    return out.getvalue()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--torch-load", nargs="+")
    args = ap.parse_args()
    if args.torch_load:
        import warnings

        import torch

        warnings.simplefilter("ignore")
        result = {}
        for path in args.torch_load:
            try:
                torch.load(path, map_location="cpu", weights_only=True)
                result[path] = None
            except Exception as e:  # noqa: BLE001 - every refusal is an answer here
                result[path] = f"{type(e).__name__}: {e}"[:300]
        print(json.dumps(result))
        return
    out = args.out
    os.makedirs(out, exist_ok=True)
    manifest = []

    def add(name, content, reason, torch_refuses=True, fmt=None):
        path = os.path.join(out, name)
        if fmt == "zip":
            write_zip(path, PROTO2 + content + STOP)
        elif fmt == "legacy":
            with open(path, "wb") as f:
                f.write(legacy_bytes(content))
        else:
            with open(path, "wb") as f:
                f.write(content)
        manifest.append({"file": name, "reason": reason, "torch_refuses": torch_refuses})

    def both(cls, make, reason):
        add(f"{cls}.zip.pth", make(False), reason, fmt="zip")
        add(f"{cls}.legacy.pth", make(True), reason, fmt="legacy")

    # The clean base, in both formats: read by the tool and by torch.
    write_zip(os.path.join(out, "clean.zip.pth"), PROTO2 + state_dict(plain_entries()) + STOP)
    with open(os.path.join(out, "clean.legacy.pth"), "wb") as f:
        f.write(legacy_bytes(state_dict(plain_entries(True))))

    forbidden = "global posix.system"
    # 1. Payloads whose results do not reach the state_dict.
    both("pop", lambda l: PAYLOAD + POP + state_dict(plain_entries(l)), forbidden)
    both("pop_mark", lambda l: MARK + PAYLOAD + POP_MARK + state_dict(plain_entries(l)), forbidden)
    both("memo_only", lambda l: PAYLOAD + b"r\xff\x00\x00\x00" + POP + state_dict(plain_entries(l)), forbidden)
    both("duplicate_key", lambda l: state_dict(plain_entries(l), before=s("w") + PAYLOAD), forbidden)
    both("tensor_hooks", lambda l: state_dict(plain_entries(l, hooks=PAYLOAD)), forbidden)
    both("tensor_metadata", lambda l: state_dict(plain_entries(l, metadata=PAYLOAD)), forbidden)
    both(
        "parameter_hooks",
        lambda l: state_dict(
            [
                (
                    k,
                    g("torch._utils", "_rebuild_parameter") + tup(v, NEWTRUE, PAYLOAD) + REDUCE,
                )
                for k, v in plain_entries(l)
            ]
        ),
        forbidden,
    )
    from_type = lambda l, typ, state: state_dict(
        [
            (
                k,
                g("torch._tensor", "_rebuild_from_type_v2")
                + tup(g("torch._utils", "_rebuild_tensor_v2"), typ, tup(*v_args), state)
                + REDUCE,
            )
            for k, v_args in [
                (
                    k,
                    [pid(str(n), len(v), None, l), i(0), tup(i(len(v))), tup(i(1)), NEWFALSE, ORDERED_DICT],
                )
                for n, (k, v) in enumerate(WEIGHTS.items())
            ]
        ]
    )
    both("from_type_type", lambda l: from_type(l, PAYLOAD, EMPTY_DICT), forbidden)
    both("from_type_state", lambda l: from_type(l, g("torch", "Tensor"), PAYLOAD), forbidden)
    both("pid_location", lambda l: state_dict(plain_entries(l, location=PAYLOAD)), forbidden)
    both(
        "build_dict",
        lambda l: state_dict(plain_entries(l), build=EMPTY_DICT + MARK + s("_metadata") + PAYLOAD + SETITEMS),
        forbidden,
    )
    plain_main = state_dict(plain_entries(True))
    for part, kw in [
        ("magic", {"magic": PROTO2 + PAYLOAD + POP + i(MAGIC) + STOP}),
        ("protocol", {"protocol": PROTO2 + PAYLOAD + POP + i(PROTOCOL_VERSION) + STOP}),
        ("sys_info", {"sys_info": PROTO2 + EMPTY_DICT + MARK + s("little_endian") + PAYLOAD + SETITEMS + STOP}),
        ("keys", {"keys": PROTO2 + EMPTY_LIST + MARK + s("0") + s("1") + APPENDS + PAYLOAD + POP + STOP}),
    ]:
        add(f"legacy_{part}.legacy.pth", legacy_bytes(plain_main, **kw), forbidden)
    # A pickled module, and os.system dressed up as one.
    module_state = lambda obj, legacy=False: (
        obj
        + EMPTY_DICT
        + MARK
        + s("training")
        + NEWTRUE
        + s("_parameters")
        + state_dict(plain_entries(legacy))
        + s("_buffers")
        + ORDERED_DICT
        + s("_modules")
        + ORDERED_DICT
        + SETITEMS
        + BUILD
    )
    add(
        "module.zip.pth",
        module_state(g("torch.nn.modules.linear", "Linear") + EMPTY_TUPLE + b"\x81"),
        "pickled object with an nn.Module's tables",
        fmt="zip",
    )
    add("module_system.zip.pth", module_state(PAYLOAD), "nn.Module's tables", fmt="zip")
    add("module_system.legacy.pth", module_state(PAYLOAD, True), "nn.Module's tables", fmt="legacy")

    # 2. Time: one deflated storage of 256 MiB of zeros and 4096 empty views of its end…
    def views(numel, n_views):
        return PROTO2 + state_dict(
            [
                (
                    f"v{n}",
                    g("torch._utils", "_rebuild_tensor_v2")
                    + tup(pid("0", numel), i(numel), tup(i(0)), tup(i(1)), NEWFALSE, ORDERED_DICT)
                    + REDUCE,
                )
                for n in range(n_views)
            ]
        ) + STOP

    def deflate(chunks):
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        out, crc, size = [], 0, 0
        for c in chunks:
            out.append(comp.compress(c))
            crc, size = zlib.crc32(c, crc), size + len(c)
        out.append(comp.flush())
        return b"".join(out), crc, size

    zeros = bytes(1 << 20)
    for name, chunks, reason in [
        ("reinflate.zip.pth", [zeros] * 256, "is deflated"),
        # …and, inflating no further than weights do, 1 MiB of noise inflated for each view.
        ("reinflate_views.zip.pth", [random.Random(0).randbytes(1 << 20)], "is deflated"),
    ]:
        comp, crc, size = deflate(chunks)
        pkl = views(size // 4, 4096)
        write_raw_zip(
            os.path.join(out, name),
            [
                ("archive/data.pkl", 0, pkl, zlib.crc32(pkl), len(pkl)),
                ("archive/byteorder", 0, b"little", zlib.crc32(b"little"), 6),
                ("archive/data/0", 8, comp, crc, size),
                ("archive/version", 0, b"3\n", zlib.crc32(b"3\n"), 2),
            ],
        )
        manifest.append({"file": name, "reason": reason, "torch_refuses": False})
    # A list of 10^6 items under a 60 MiB key.
    big_key = "k" * (60 << 20)
    pkl = PROTO2 + ORDERED_DICT + MARK + s(big_key) + EMPTY_LIST + MARK + i(1) * 10**6 + APPENDS
    pkl += s("w") + tensor("0", 4) + SETITEMS + STOP
    write_zip(os.path.join(out, "long_key.zip.pth"), pkl, data={"0": storages()["0"]}, deflate=("data.pkl",))
    manifest.append({"file": "long_key.zip.pth", "reason": "data.pkl would inflate", "torch_refuses": False})

    # Views that each reach across a whole stored storage (64 MiB), 4096 of them: each view
    # would read it all.
    numel = 16 << 20
    strided = [
        (
            f"s{n}",
            g("torch._utils", "_rebuild_tensor_v2")
            + tup(pid("0", numel), i(0), tup(i(2)), tup(i(numel - 1)), NEWFALSE, ORDERED_DICT)
            + REDUCE,
        )
        for n in range(4096)
    ]
    write_zip(os.path.join(out, "wide_views.zip.pth"), PROTO2 + state_dict(strided) + STOP, data={"0": bytes(numel * 4)})
    manifest.append({"file": "wide_views.zip.pth", "reason": "would read", "torch_refuses": False})
    # One tensor of 60 dimensions fetched from the memo 300,000 times: each copy copies its
    # size and stride.
    dims = tup(*[i(1)] * 60)
    one = g("torch._utils", "_rebuild_tensor_v2") + tup(pid("0", 4), i(0), dims, dims, NEWFALSE, ORDERED_DICT) + REDUCE
    pkl = PROTO2 + ORDERED_DICT + MARK + s("w") + one + b"q\x07" + s("copies") + EMPTY_LIST + MARK
    pkl += b"h\x07" * 300_000 + APPENDS + SETITEMS + STOP
    write_zip(os.path.join(out, "tensor_copies.zip.pth"), pkl, data={"0": storages()["0"]})
    manifest.append({"file": "tensor_copies.zip.pth", "reason": "memo copies counted", "torch_refuses": False})
    # Tuples nested 200,000 deep (their drop would overflow the stack).
    write_zip(os.path.join(out, "deep_tuples.zip.pth"), PROTO2 + NONE + TUPLE1 * 200_000 + STOP)
    manifest.append({"file": "deep_tuples.zip.pth", "reason": "tuples nested deeper", "torch_refuses": False})

    # 3. Memory: 30 million EMPTY_LIST opcodes in a deflated data.pkl, and 3 million stored.
    pkl = PROTO2 + MARK + EMPTY_LIST * 30_000_000 + TUPLE + STOP
    write_zip(os.path.join(out, "empty_lists.zip.pth"), pkl, deflate=("data.pkl",))
    manifest.append({"file": "empty_lists.zip.pth", "reason": "data.pkl would inflate", "torch_refuses": False})
    pkl = PROTO2 + EMPTY_LIST + MARK + EMPTY_LIST * 3_000_000 + APPENDS + STOP
    write_zip(os.path.join(out, "many_values.zip.pth"), pkl)
    manifest.append({"file": "many_values.zip.pth", "reason": "values in one pickle", "torch_refuses": False})
    # Just under that bound, the costliest kind of value (short strings): read (then refused for
    # not fitting the network) within the memory bound.
    pkl = PROTO2 + ORDERED_DICT + MARK + s("w") + tensor("0", 4) + s("junk") + EMPTY_LIST + MARK
    pkl += s("ab") * 999_000 + APPENDS + SETITEMS + STOP
    write_zip(os.path.join(out, "values_at_bound.zip.pth"), pkl, data={"0": storages()["0"]})
    manifest.append({"file": "values_at_bound.zip.pth", "reason": "do not fit", "torch_refuses": False, "read": True})
    # 16 tensors under one 50 MiB key, the key fetched from the memo for each.
    key = "m" * (50 << 20)
    pkl = PROTO2 + ORDERED_DICT + MARK + s("t0") + ORDERED_DICT + MARK + s(key) + b"q\x01" + tensor("0", 4) + SETITEMS
    for n in range(1, 16):
        pkl += s(f"t{n}") + ORDERED_DICT + MARK + b"h\x01" + tensor("0", 4) + SETITEMS
    pkl += SETITEMS + STOP
    write_zip(os.path.join(out, "memo_key.zip.pth"), pkl, data={"0": storages()["0"]}, deflate=("data.pkl",))
    manifest.append({"file": "memo_key.zip.pth", "reason": "data.pkl would inflate", "torch_refuses": False})
    # The same, stored, with a key just past the longest string read (16 MiB).
    key = "m" * ((16 << 20) + 1)
    pkl = PROTO2 + ORDERED_DICT + MARK + s("t0") + ORDERED_DICT + MARK + s(key) + b"q\x01" + tensor("0", 4) + SETITEMS
    for n in range(1, 16):
        pkl += s(f"t{n}") + ORDERED_DICT + MARK + b"h\x01" + tensor("0", 4) + SETITEMS
    pkl += SETITEMS + STOP
    write_zip(os.path.join(out, "memo_key_stored.zip.pth"), pkl, data={"0": storages()["0"]})
    manifest.append({"file": "memo_key_stored.zip.pth", "reason": "a string of 16777217 bytes", "torch_refuses": False})
    # A long dict key of 2 KiB over a state_dict's tensors.
    entries = [("k" * 2048, tensor("0", 4))]
    write_zip(os.path.join(out, "long_name.zip.pth"), PROTO2 + state_dict(entries) + STOP, data={"0": storages()["0"]})
    manifest.append({"file": "long_name.zip.pth", "reason": "a dict key of 2048 bytes", "torch_refuses": False})
    # A tar-format file whose storages member is a sparse 3 GiB hole.
    path = os.path.join(out, "sparse.tar.pth")
    with open(path, "wb") as f:
        sys_info = tarfile.TarInfo("sys_info")
        body = PROTO2 + EMPTY_DICT + STOP
        sys_info.size = len(body)
        f.write(sys_info.tobuf(tarfile.GNU_FORMAT))
        f.write(body + bytes(-len(body) % 512))
        hole = tarfile.TarInfo("storages")
        hole.type = tarfile.GNUTYPE_SPARSE
        hole.size = 3 << 30
        hole.sparse = [(3 << 30, 0)]
        f.write(hole.tobuf(tarfile.GNU_FORMAT))
        f.write(bytes(1024))
    manifest.append({"file": "sparse.tar.pth", "reason": "tar format", "torch_refuses": False})

    # 4. The terminal: a class name with CR and ESC, and a key with them.
    name = "Net\rwrote OUT.pt: googlenet, 2 classes\x1b[2K"
    add("terminal_class.zip.pth", g("__main__", name) + EMPTY_TUPLE + b"\x81" + POP + state_dict(plain_entries()), "global __main__.Net\\rwrote", fmt="zip")
    entries = plain_entries()
    entries[0] = ("w\x1b[2K\rwrote OUT.pt", entries[0][1])
    write_zip(os.path.join(out, "terminal_key.zip.pth"), PROTO2 + state_dict(entries) + STOP)
    manifest.append({"file": "terminal_key.zip.pth", "reason": "w\\u{1b}[2K\\rwrote OUT.pt", "torch_refuses": False, "read": True})

    # The same weights as torch.save itself writes them, where PyTorch is installed: the fuzz
    # test mutates these too (their zip layout is PyTorch's own, not Python's zipfile's).
    try:
        import collections

        import torch

        sd = collections.OrderedDict((k, torch.tensor(v)) for k, v in WEIGHTS.items())
        torch.save(sd, os.path.join(out, "torch.zip.pth"))
        torch.save(sd, os.path.join(out, "torch.legacy.pth"), _use_new_zipfile_serialization=False)
    except ImportError:
        pass

    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


def write_raw_zip(path, entries):
    """A zip archive of (name, method, data as stored, crc, size) entries, written by hand so
    that a deflated entry can hold any deflate stream."""
    out = io.BytesIO()
    central = []
    for name, method, data, crc, size in entries:
        offset = out.tell()
        fname = name.encode()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(data), size, len(fname), 0))
        out.write(fname)
        out.write(data)
        central.append(
            struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc, len(data), size, len(fname), 0, 0, 0, 0, 0, offset)
            + fname
        )
    start = out.tell()
    for c in central:
        out.write(c)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), out.tell() - start, start, 0))
    with open(path, "wb") as f:
        f.write(out.getvalue())


if __name__ == "__main__":
    main()
