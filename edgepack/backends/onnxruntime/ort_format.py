"""Byte-identical .ort files: rewrite the KernelTypeStrResolver of an ORT format model in a fixed order.

onnxruntime (1.32) serializes the ``kernel_type_str_resolver`` of the ``InferenceSession`` root table
by iterating absl hash maps (salted per table), so although the vectors are sorted
(``CreateVectorOfSortedTables``), the *placement* of the entries, their strings and vtables changes from
run to run. Everything else in the file is the same on every conversion.

``InferenceSession::SaveToOrtFormat`` builds, in this order: the ``ort_version`` string, the whole
``Model`` subtree, the ``KernelTypeStrResolver`` subtree, the root table, and finishes with file
identifier ``ORTM``. Flatbuffers are built back to front, so the file is::

    [root uoffset, "ORTM"][root vtable + table][resolver region][Model table ... ort_version string]
    0                                          ^ all < T        ^ T                               end

The tail ``file[T:]`` (T = the lower of the Model table and its vtable) was complete before the resolver
existed, so it references nothing below T, and flatbuffers alignment is relative to the end of the
buffer. We keep that tail byte for byte at the end of a new buffer and rebuild the resolver (entries in
op id order, kernel type strings in order - the same order ORT's sorted vectors already have; the
``args`` of each kernel type string keep their order, which ORT reads as given: the first arg resolves
the type) and the root table in front of it.

If a file does not have that layout (e.g. a future onnxruntime builds the resolver first, or a root field
we do not know is set), :func:`canonicalize_ort` raises :class:`StageError`; it never re-serializes the
model itself.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

from ...errors import StageError
from . import tools as _ort_tools

IDENTIFIER = b"ORTM"
#: largest alignment in the ORT schema (int64/double, 8-byte vectors); the tail keeps its alignment
#: relative to the end, so the new buffer's size only has to be a multiple of it. A fixed value keeps
#: the output independent of the (run-dependent) original resolver size.
MIN_ALIGN = 8
#: InferenceSession vtable slots (ort.fbs): 0 ort_version, 1 model, 2 session_state (deprecated),
#: 3 kernel_type_str_resolver
_KNOWN_ROOT_SLOTS = {0, 1, 3}


def _fail(path: Path, why: str) -> StageError:
    return StageError(f"canonicalize: {Path(path).name}: {why}")


def _vtable_pos(buf: bytes, table_pos: int) -> int:
    return table_pos - struct.unpack_from("<i", buf, table_pos)[0]


def _vtable_slots(buf: bytes, table_pos: int) -> dict[int, int]:
    """{slot: field offset in the table} of the fields present in the table at ``table_pos``."""
    vt = _vtable_pos(buf, table_pos)
    vt_size = struct.unpack_from("<H", buf, vt)[0]
    slots = {}
    for slot in range((vt_size - 4) // 2):
        off = struct.unpack_from("<H", buf, vt + 4 + 2 * slot)[0]
        if off:
            slots[slot] = off
    return slots


def _field_target(tab, voffset: int) -> int:
    """Absolute position an offset field (table/string/vector) points to."""
    o = tab.Offset(voffset)
    return tab.Indirect(o + tab.Pos)


#: [(op_id, [(kernel_type_str, [(arg_type, index), ...]), ...]), ...]
Entries = list[tuple[bytes, list[tuple[bytes, list[tuple[int, int]]]]]]


def _read_resolver(resolver) -> tuple[Entries, list[tuple[str, int]]]:
    """The resolver's content, and (kind, position) of every object it owns (for the layout check)."""
    owned: list[tuple[str, int]] = [("table", resolver._tab.Pos)]
    entries = []
    if resolver._tab.Offset(4):
        owned.append(("vector", _field_target(resolver._tab, 4)))
    for i in range(resolver.OpKernelTypeStrArgsLength()):
        op_entry = resolver.OpKernelTypeStrArgs(i)
        owned.append(("table", op_entry._tab.Pos))
        # op_id is written with CreateSharedString (fbs::utils::SaveOpIdentifierOrtFormat) and may point at
        # the same string in the model region (e.g. produced_op_ids of saved runtime optimizations): not
        # "owned" either. References from the resolver into the tail are harmless - we rebuild the resolver.
        if op_entry._tab.Offset(6):
            owned.append(("vector", _field_target(op_entry._tab, 6)))
        type_strs = []
        for j in range(op_entry.KernelTypeStrArgsLength()):
            ts_entry = op_entry.KernelTypeStrArgs(j)
            owned.append(("table", ts_entry._tab.Pos))
            # kernel_type_str is a CreateSharedString: it may be shared with an earlier one; not "owned"
            if ts_entry._tab.Offset(6):
                owned.append(("vector", _field_target(ts_entry._tab, 6)))
            args = []
            for k in range(ts_entry.ArgsLength()):
                arg = ts_entry.Args(k)
                owned.append(("table", arg._tab.Pos))
                args.append((int(arg.ArgType()), int(arg.Index())))
            type_strs.append((ts_entry.KernelTypeStr() or b"", args))
        entries.append((op_entry.OpId() or b"", type_strs))
    return entries, owned


def _layout(path: Path, buf: bytearray) -> dict[str, Any]:
    """Parse the root, locate T and check the layout assumption; StageError if it does not hold."""
    fbs = _ort_tools.fbs()
    if len(buf) < 8 or not fbs.InferenceSession.InferenceSession.InferenceSessionBufferHasIdentifier(buf, 0):
        raise _fail(path, "not an ORT format model (no 'ORTM' file identifier)")
    session = fbs.InferenceSession.InferenceSession.GetRootAs(buf, 0)
    root = session._tab.Pos
    slots = set(_vtable_slots(buf, root))
    if not slots <= _KNOWN_ROOT_SLOTS or not {0, 1, 3} <= slots:
        raise _fail(path, f"unexpected InferenceSession fields (vtable slots {sorted(slots)}, expected 0, 1, 3)")
    model_pos = _field_target(session._tab, 6)
    version_pos = _field_target(session._tab, 4)
    resolver = session.KernelTypeStrResolver()
    tail_start = min(model_pos, _vtable_pos(buf, model_pos))
    entries, owned = _read_resolver(resolver)
    problems = []
    if version_pos < tail_start:
        problems.append(f"ort_version string at {version_pos} < T={tail_start}")
    if root >= tail_start or _vtable_pos(buf, root) >= tail_start:
        problems.append("root table or its vtable inside the model region")
    for kind, pos in owned:
        if pos >= tail_start:
            problems.append(f"resolver {kind} at {pos} >= T={tail_start}")
    if problems:
        raise _fail(
            path,
            "layout is not [root][resolver][model subtree + ort_version] as written by onnxruntime 1.32 "
            f"({'; '.join(problems[:3])}); refusing to rewrite it",
        )
    return {
        "tail_start": tail_start,
        "model_from_end": len(buf) - model_pos,
        "version_from_end": len(buf) - version_pos,
        "entries": entries,
        "resolver_objects": len(owned),
    }


def _build(builder, model_from_end: int, version_from_end: int, entries) -> memoryview:
    """Prepend a sorted resolver and a new root to the tail already at the end of ``builder.Bytes``."""
    fbs = _ort_tools.fbs()
    arg_mod = fbs.ArgTypeAndIndex
    ts_mod = fbs.KernelTypeStrArgsEntry
    op_mod = fbs.OpIdKernelTypeStrArgsEntry
    res_mod = fbs.KernelTypeStrResolver
    sess_mod = fbs.InferenceSession

    builder.minalign = MIN_ALIGN

    def vector_of(start_vector, offsets):
        start_vector(builder, len(offsets))
        for off in reversed(offsets):
            builder.PrependUOffsetTRelative(off)
        return builder.EndVector()

    op_offsets = []
    for op_id, type_strs in sorted(entries, key=lambda e: e[0]):
        ts_offsets = []
        for type_str, args in sorted(type_strs, key=lambda t: t[0]):
            arg_offsets = []
            for arg_type, index in args:  # order is meaningful: keep it
                arg_mod.Start(builder)
                arg_mod.AddIndex(builder, index)
                arg_mod.AddArgType(builder, arg_type)
                arg_offsets.append(arg_mod.End(builder))
            args_vec = vector_of(ts_mod.StartArgsVector, arg_offsets)
            type_str_off = builder.CreateString(type_str)
            ts_mod.Start(builder)
            ts_mod.AddKernelTypeStr(builder, type_str_off)
            ts_mod.AddArgs(builder, args_vec)
            ts_offsets.append(ts_mod.End(builder))
        ts_vec = vector_of(op_mod.StartKernelTypeStrArgsVector, ts_offsets)
        op_id_off = builder.CreateString(op_id)
        op_mod.Start(builder)
        op_mod.AddOpId(builder, op_id_off)
        op_mod.AddKernelTypeStrArgs(builder, ts_vec)
        op_offsets.append(op_mod.End(builder))
    op_vec = vector_of(res_mod.StartOpKernelTypeStrArgsVector, op_offsets)
    res_mod.Start(builder)
    res_mod.AddOpKernelTypeStrArgs(builder, op_vec)
    resolver_off = res_mod.End(builder)

    sess_mod.Start(builder)
    sess_mod.AddOrtVersion(builder, version_from_end)
    sess_mod.AddModel(builder, model_from_end)
    sess_mod.AddKernelTypeStrResolver(builder, resolver_off)
    root = sess_mod.End(builder)
    builder.Finish(root, file_identifier=IDENTIFIER)
    return memoryview(builder.Bytes)[builder.head :]


def canonicalize_ort(path_in: Path, path_out: Path) -> dict[str, Any]:
    """Rewrite ``path_in`` (.ort) to ``path_out`` (may be the same path) with a deterministic resolver.

    Returns ``{bytes_before, bytes_after, resolver_entries, sha256}``. Raises :class:`StageError` if
    the file is not an ORT format model or not laid out as onnxruntime 1.32 writes it.
    Idempotent: canonicalizing a canonical file gives the same bytes.
    """
    import flatbuffers

    path_in, path_out = Path(path_in), Path(path_out)
    if not path_in.is_file():
        raise _fail(path_in, "file not found")
    size = path_in.stat().st_size
    # One buffer of the file's size: the file is read into its end, parsed in place, and the new
    # root and resolver are written in front of the tail, which never moves (builder offsets are
    # distances from the end, like the file's). Peak memory is about one copy of the model.
    builder = flatbuffers.Builder(size + 4096)
    region = memoryview(builder.Bytes)[len(builder.Bytes) - size :]
    with path_in.open("rb") as f:
        got = 0
        while got < size:
            n = f.readinto(region[got:])
            if not n:
                raise _fail(path_in, "file shrank while being read")
            got += n
    layout = _layout(path_in, region)
    tail_from_end = size - layout["tail_start"]
    tail_sha = hashlib.sha256(region[layout["tail_start"] :]).hexdigest()
    del region
    builder.head = len(builder.Bytes) - tail_from_end
    out = _build(builder, layout["model_from_end"], layout["version_from_end"], layout["entries"])
    # self-check: the new file parses, keeps the tail and the resolver content
    check = _layout(path_out, out)
    if (hashlib.sha256(out[check["tail_start"] :]).hexdigest() != tail_sha
            or sorted(check["entries"]) != sorted(layout["entries"])):
        raise _fail(path_in, "internal error: rewritten file does not round-trip")
    path_out.parent.mkdir(parents=True, exist_ok=True)
    tmp = path_out.with_name(path_out.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(out)
    tmp.replace(path_out)
    return {
        "bytes_before": size,
        "bytes_after": len(out),
        "resolver_entries": len(layout["entries"]),
        "sha256": hashlib.sha256(out).hexdigest(),
    }
