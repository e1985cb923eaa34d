"""The ONNX file format, read and written by hand (no ``onnx`` or ``protobuf`` package).

The protobuf wire format (varints, fields, packed lists), the model as this runtime sees it
(:class:`Graph` of :class:`Node` and :class:`Attribute`, initializers as numpy arrays), the
parser :func:`parse`, which checks every size against the data and the limits below before it
allocates, and :func:`float16_model`, which rewrites a model with float16 weights (how the
shipped CenterFace file is made). :class:`OnnxError` is raised for anything malformed, here
and by the rest of the runtime.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np  # noqa: TID253 - tensors are read into numpy arrays

# ONNX TensorProto.DataType values
FLOAT, UINT8, INT8, UINT16, INT16, INT32, INT64, STRING, BOOL, FLOAT16, DOUBLE = range(1, 12)
_NUMPY_TYPES = {
    FLOAT: "<f4",
    UINT8: "u1",
    INT8: "i1",
    UINT16: "<u2",
    INT16: "<i2",
    INT32: "<i4",
    INT64: "<i8",
    BOOL: "u1",
    FLOAT16: "<f2",
    DOUBLE: "<f8",
}
# AttributeProto.AttributeType values
_A_FLOAT, _A_INT, _A_STRING, _A_TENSOR, _A_GRAPH, _A_FLOATS, _A_INTS = 1, 2, 3, 4, 5, 6, 7

MAX_MODEL_BYTES = 256 << 20  # CenterFace is 7 MB; nothing this reader is for comes near
MAX_TENSOR_ELEMENTS = 1 << 26  # per initializer (CenterFace's largest: 307,200)


class OnnxError(ValueError):
    """The model file is not an ONNX model this runtime can run (or an input does not fit)."""


# -- protobuf wire format --------------------------------------------------------------------


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise OnnxError(f"truncated varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise OnnxError(f"malformed varint at byte {pos}")


def _fields(buf: bytes, pos: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field in ``buf[pos:end]``; the value of a
    length-delimited field is its (start, end) span, of a fixed-size one its bytes."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        value: Any
        if number == 0:
            raise OnnxError(f"field number 0 at byte {pos}")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire in {1, 5}:
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise OnnxError(f"truncated field at byte {pos}")
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 2:
            size, pos = _varint(buf, pos, end)
            if size > end - pos:
                raise OnnxError(f"field {number} runs past the end of its message at byte {pos}")
            value, pos = (pos, pos + size), pos + size
        else:
            raise OnnxError(f"unsupported protobuf wire type {wire} at byte {pos}")
        yield number, wire, value


def _text(buf: bytes, span: tuple[int, int]) -> str:
    try:
        return buf[span[0] : span[1]].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OnnxError(f"a name is not UTF-8 at byte {span[0]}") from exc


def _ints(buf: bytes, wire: int, value: Any, out: list[int]) -> None:
    """Append a repeated int64 field (packed or not) to ``out``, refusing a list longer than
    any tensor may be before it is built."""
    if len(out) >= MAX_TENSOR_ELEMENTS:
        raise OnnxError(f"an integer list holds more than {MAX_TENSOR_ELEMENTS:,} values")
    if wire == 0:
        out.append(value - (1 << 64) if value >= 1 << 63 else value)
        return
    if wire != 2:
        raise OnnxError("an integer list has the wrong wire type")
    values = _packed_varints(buf, *value)
    if len(out) + len(values) > MAX_TENSOR_ELEMENTS:
        raise OnnxError(f"an integer list holds more than {MAX_TENSOR_ELEMENTS:,} values")
    out.extend(values.view(np.int64).tolist())


def _packed_varints(buf: bytes, pos: int, end: int) -> Any:
    """The varints in ``buf[pos:end]`` as uint64, decoded by numpy in one sweep (a tensor's
    data may hold millions: one Python step each took seconds and hundreds of MB)."""
    data = np.frombuffer(buf, np.uint8, end - pos, pos)
    if not data.size:
        return np.zeros(0, np.uint64)
    last = np.flatnonzero(data < 0x80)  # the final byte of each varint
    if not last.size or last[-1] != data.size - 1:
        raise OnnxError("a packed integer list ends inside a value")
    first = np.concatenate(([0], last[:-1] + 1))
    length = last - first + 1
    if int(length.max()) > 10:
        raise OnnxError("a varint is longer than 10 bytes")
    values = np.zeros(last.size, np.uint64)
    for k in range(int(length.max())):
        has = length > k
        part = (data[first[has] + k] & 0x7F).astype(np.uint64)
        values[has] |= part << np.uint64(7 * k)
    return values


def _floats(buf: bytes, wire: int, value: Any, out: list[float]) -> None:
    if wire == 5:
        out.append(struct.unpack("<f", value)[0])
        return
    if wire != 2 or (value[1] - value[0]) % 4:
        raise OnnxError("a float list has the wrong wire type or length")
    if len(out) + (value[1] - value[0]) // 4 > MAX_TENSOR_ELEMENTS:
        raise OnnxError(f"a float list holds more than {MAX_TENSOR_ELEMENTS:,} values")
    out.extend(np.frombuffer(buf, "<f4", (value[1] - value[0]) // 4, value[0]).tolist())


def _key(number: int, wire: int) -> bytes:
    return _enc_varint(number << 3 | wire)


def _enc_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _enc_bytes(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _enc_varint(len(payload)) + payload


# -- the model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attribute:
    name: str
    kind: int
    value: Any  # float, int, bytes, list[float], list[int]; None for kinds not read


@dataclass
class Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Attribute]
    name: str = ""
    domain: str = ""
    span: tuple[int, int] = (0, 0)  # where the NodeProto sits in the file

    def describe(self) -> str:
        return f"{self.op} node {self.name or self.outputs[0] if self.outputs else '?'!r}"


@dataclass
class Graph:
    """A parsed ONNX graph: nodes in file order, initializers as numpy arrays (any dtype)."""

    nodes: list[Node]
    initializers: dict[str, Any]
    initializer_types: dict[str, int]
    inputs: list[str]
    outputs: list[str]
    opsets: dict[str, int]
    input_spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    output_spans: list[tuple[int, int]] = field(default_factory=list)
    graph_name: str = ""
    ir_version: int = 0


def _tensor(buf: bytes, span: tuple[int, int]) -> tuple[str, int, Any]:
    """(name, data type, numpy array) of a TensorProto. The data fields are only located on
    the first pass and read once the shape is known, so a list longer than the shape says
    is refused before it is decoded."""
    dims: list[int] = []
    dtype = 0
    name = ""
    raw: tuple[int, int] | None = None
    lists: dict[int, list[tuple[int, Any]]] = {4: [], 5: [], 7: []}  # floats, int32s, int64s
    for number, wire, value in _fields(buf, *span):
        if number == 1:
            _ints(buf, wire, value, dims)
        elif number == 2 and wire == 0:
            dtype = value
        elif number == 8 and wire == 2:
            name = _text(buf, value)
        elif number == 9 and wire == 2:
            raw = value
        elif number in lists:
            lists[number].append((wire, value))
        elif number == 14 and wire == 0 and value != 0:
            raise OnnxError(f"tensor {name!r} keeps its data in an external file")
        elif number in (3, 6, 10, 11, 13):  # segment, strings, doubles, uint64s, external
            raise OnnxError(f"tensor {name!r} uses an encoding this runtime does not read")
    if dtype not in _NUMPY_TYPES:
        raise OnnxError(f"tensor {name!r} has data type {dtype}, which is not supported")
    if any(d < 0 for d in dims) or len(dims) > 8:
        raise OnnxError(f"tensor {name!r} has an invalid shape {dims}")
    count = 1
    for d in dims:
        count *= d
    if count > MAX_TENSOR_ELEMENTS:
        raise OnnxError(
            f"tensor {name!r} declares {count:,} elements, over the limit of "
            f"{MAX_TENSOR_ELEMENTS:,}"
        )
    np_type = np.dtype(_NUMPY_TYPES[dtype])
    if raw is not None:
        size = raw[1] - raw[0]
        if size != count * np_type.itemsize:
            raise OnnxError(
                f"tensor {name!r} declares {count:,} elements but holds {size:,} bytes of data"
            )
        return name, dtype, np.frombuffer(buf, np_type, count, raw[0]).reshape(dims)
    if dtype == FLOAT:
        field = 4
    elif dtype == INT64:
        field = 7
    elif dtype in (INT32, INT16, INT8, UINT16, UINT8, BOOL, FLOAT16):
        field = 5
    else:
        field = 0
    parts = lists.get(field, [])
    # at least one byte per varint, four per float: more values than declared shows early
    least = sum((v[1] - v[0]) // (4 if field == 4 else 10) if w == 2 else 1 for w, v in parts)
    if least > count:
        raise OnnxError(f"tensor {name!r} declares {count:,} elements but holds more")
    values: list[Any] = []
    for wire, value in parts:
        (_floats if field == 4 else _ints)(buf, wire, value, values)
    if len(values) != count:
        raise OnnxError(f"tensor {name!r} declares {count:,} elements but holds {len(values):,}")
    if dtype == FLOAT16:  # the bit patterns, one per int32
        return name, dtype, np.array(values, dtype="<u2").view("<f2").reshape(dims)
    return name, dtype, np.array(values, dtype=np_type).reshape(dims)


def _attribute(buf: bytes, span: tuple[int, int]) -> Attribute:
    name = ""
    kind = 0
    scalar: Any = None
    floats: list[float] = []
    ints: list[int] = []
    for number, wire, value in _fields(buf, *span):
        if number == 1 and wire == 2:
            name = _text(buf, value)
        elif number == 20 and wire == 0:
            kind = value
        elif number == 2 and wire == 5:
            scalar = struct.unpack("<f", value)[0]
        elif number == 3 and wire == 0:
            scalar = value - (1 << 64) if value >= 1 << 63 else value
        elif number == 4 and wire == 2:
            scalar = buf[value[0] : value[1]]
        elif number == 5 and wire == 2:
            scalar = value  # a TensorProto span, read when needed
        elif number == 7:
            _floats(buf, wire, value, floats)
        elif number == 8:
            _ints(buf, wire, value, ints)
        elif number == 21:
            raise OnnxError(f"attribute {name!r} refers to a function attribute")
    if kind == _A_FLOATS:
        return Attribute(name, kind, floats)
    if kind == _A_INTS:
        return Attribute(name, kind, ints)
    if kind == _A_TENSOR and scalar is not None:
        return Attribute(name, kind, _tensor(buf, scalar)[2])
    if kind in (_A_FLOAT, _A_INT, _A_STRING):
        return Attribute(name, kind, scalar)
    return Attribute(name, kind, None)


def _node(buf: bytes, span: tuple[int, int]) -> Node:
    node = Node(op="", inputs=[], outputs=[], attrs={}, span=span)
    for number, wire, value in _fields(buf, *span):
        if wire != 2:
            continue
        if number == 1:
            node.inputs.append(_text(buf, value))
        elif number == 2:
            node.outputs.append(_text(buf, value))
        elif number == 3:
            node.name = _text(buf, value)
        elif number == 4:
            node.op = _text(buf, value)
        elif number == 5:
            attr = _attribute(buf, value)
            if attr.name in node.attrs:
                raise OnnxError(f"{node.op} node has attribute {attr.name!r} twice")
            node.attrs[attr.name] = attr
        elif number == 7:
            node.domain = _text(buf, value)
    if not node.op:
        raise OnnxError(f"a node at byte {span[0]} has no operator")
    return node


def _value_name(buf: bytes, span: tuple[int, int]) -> str:
    for number, wire, value in _fields(buf, *span):
        if number == 1 and wire == 2:
            return _text(buf, value)
    raise OnnxError(f"a graph input or output at byte {span[0]} has no name")


def parse(data: bytes) -> Graph:
    """Parse an ONNX ModelProto. Raises :class:`OnnxError` on anything malformed."""
    if len(data) > MAX_MODEL_BYTES:
        raise OnnxError(f"the model is {len(data):,} bytes, over the limit of {MAX_MODEL_BYTES:,}")
    if len(data) < 16 or data[0] != 0x08:  # every exporter writes ir_version (field 1) first
        raise OnnxError("not an ONNX model (it does not start with an ir_version field)")
    buf = bytes(data)
    graph_span: tuple[int, int] | None = None
    ir_version = 0
    opsets: dict[str, int] = {}
    for number, wire, value in _fields(buf, 0, len(buf)):
        if number == 1 and wire == 0:
            ir_version = value
        elif number == 7 and wire == 2:
            graph_span = value
        elif number == 8 and wire == 2:
            domain, version = "", 0
            for n2, w2, v2 in _fields(buf, *value):
                if n2 == 1 and w2 == 2:
                    domain = _text(buf, v2)
                elif n2 == 2 and w2 == 0:
                    version = v2
            opsets[domain] = version
    if graph_span is None:
        raise OnnxError("not an ONNX model (it has no graph)")
    if not 3 <= ir_version <= 11:
        raise OnnxError(f"unsupported ONNX IR version {ir_version}")
    graph = Graph([], {}, {}, [], [], opsets, ir_version=ir_version)
    for number, wire, value in _fields(buf, *graph_span):
        if wire != 2:
            continue
        if number == 1:
            graph.nodes.append(_node(buf, value))
        elif number == 2:
            graph.graph_name = _text(buf, value)
        elif number == 5:
            name, dtype, array = _tensor(buf, value)
            if name in graph.initializers:
                raise OnnxError(f"initializer {name!r} appears twice")
            graph.initializers[name] = array
            graph.initializer_types[name] = dtype
        elif number == 11:
            name = _value_name(buf, value)
            graph.inputs.append(name)
            graph.input_spans[name] = value
        elif number == 12:
            graph.outputs.append(_value_name(buf, value))
            graph.output_spans.append(value)
        elif number == 15:
            raise OnnxError("sparse initializers are not supported")
    if not graph.nodes or not graph.outputs:
        raise OnnxError("the graph has no nodes or no outputs")
    return graph


def float16_model(data: bytes, *, producer: str = "veilpix") -> bytes:
    """The same model with every FLOAT initializer stored as FLOAT16 (raw data), other
    initializers kept, unused initializers and graph inputs that merely list initializers
    dropped. Nodes and the graph's input/output descriptions are copied byte for byte, so
    the result is deterministic. (Such a file is meant for this runtime, which computes in
    float32 whatever the storage type; strict ONNX checkers want a Cast before each use.)"""
    graph = parse(data)
    buf = bytes(data)
    used = {name for node in graph.nodes for name in node.inputs}
    out = bytearray()
    for node in graph.nodes:
        out += _enc_bytes(1, buf[node.span[0] : node.span[1]])
    out += _enc_bytes(2, (graph.graph_name or "graph").encode())
    for name, stored in graph.initializers.items():
        if name not in used:
            continue
        dtype = graph.initializer_types[name]
        array = stored
        if dtype == FLOAT:
            array = np.asarray(stored, dtype="<f4").astype("<f2")
            dtype = FLOAT16
        tensor = bytearray()
        if array.ndim:
            tensor += _enc_bytes(1, b"".join(_enc_varint(int(d)) for d in array.shape))
        tensor += _key(2, 0) + _enc_varint(dtype)
        tensor += _enc_bytes(8, name.encode())
        tensor += _enc_bytes(9, np.ascontiguousarray(array).tobytes())
        out += _enc_bytes(5, bytes(tensor))
    for name in graph.inputs:
        if name not in graph.initializers:
            span = graph.input_spans[name]
            out += _enc_bytes(11, buf[span[0] : span[1]])
    for span in graph.output_spans:
        out += _enc_bytes(12, buf[span[0] : span[1]])
    model = bytearray(_key(1, 0) + _enc_varint(graph.ir_version))
    model += _enc_bytes(2, producer.encode())
    model += _enc_bytes(7, bytes(out))
    for domain, version in sorted(graph.opsets.items()):
        opset = (_enc_bytes(1, domain.encode()) if domain else b"") + _key(2, 0)
        model += _enc_bytes(8, opset + _enc_varint(version))
    return bytes(model)
