"""A small ONNX reader and numpy runtime: just enough to run CenterFace without OpenCV.

``load(data)`` parses an ONNX model (protobuf wire format, read by hand: no ``onnx`` or
``protobuf`` package) and compiles it into a :class:`Network`; ``Network.run`` evaluates it in
float32 with numpy alone. Initializers may be FLOAT (``raw_data`` or ``float_data``) or
FLOAT16 (``raw_data`` or ``int32_data``); either way the network runs in float32.

The runtime knows the operators CenterFace uses and nothing else: ``Conv`` (dense, grouped,
depthwise), ``ConvTranspose``, ``BatchNormalization`` (inference form), ``Relu``,
``Sigmoid``, ``Add`` and ``Cast`` (to FLOAT or FLOAT16, computed in float32). Tensors are
4-D with a batch of one. Anything else (another operator, an attribute it does not know, an
attribute value it does not support, external data, a tensor larger than its data) raises
:class:`OnnxError` at load time: nothing is skipped or guessed.

How it runs: activations are kept channels-last (H x W x C, which makes every 1x1
convolution a single matrix product and lets per-channel weights broadcast along the
contiguous axis). At load time each BatchNormalization that follows a convolution is folded
into its weights, and ReLU, Sigmoid and Add are fused into the convolution before them. A
run of convolutions whose intermediate results feed only the next one (MobileNetV2's
expand / depthwise / project blocks) is evaluated in bands of rows: each stage computes
just the rows the next one asks for and keeps the few rows that overlap with the next
band, so the wide intermediate tensors never exist in full and the work stays in the CPU
cache. 1x1 convolutions are one BLAS matrix product per band, k x k convolutions an
im2col copy plus one product, depthwise ones a multiply-accumulate of shifted views of the
band with per-channel weights (one ``einsum``), and a ConvTranspose one product followed by a
strided scatter of the taps. The bands of a chain are shared out among a few threads
(numpy and BLAS release the GIL), and while a network runs OpenBLAS is kept single-threaded
so that its threads do not fight these (see :class:`_BlasThreads`).

A :class:`Network` holds read-only weights (and a few tiles of them it builds once): one
instance may run on several threads at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import struct
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

# A numpy runtime by nature; this module is imported only when faces are looked for.
import numpy as np  # noqa: TID253 - the runtime is numpy throughout

if TYPE_CHECKING:
    import numpy.typing as npt

    Array = npt.NDArray[np.float32]

__all__ = ["Network", "OnnxError", "float16_model", "load", "parse"]

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
MAX_KERNEL = 15
MAX_STRIDE = 8
MAX_PAD = 16
MAX_DILATION = 8
GROWTH = 96  # no activation may hold more than this many elements per input element
BAND_ELEMENTS = 1 << 20  # float32 elements a band of a fused chain aims to hold at its widest
MAX_THREADS = 4  # row bands are spread over this many threads at most (and the cores there are)
DW_CHUNK = 4096  # floats of a row a depthwise filter's taps are tiled over
PARALLEL_MIN = 1 << 20  # a chain whose outputs hold fewer floats runs on one thread
TASKS_PER_THREAD = 2  # runs of rows per thread and chain: slack for a thread that gets less time


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
    """Append a repeated int64 field (packed or not) to ``out``."""
    if wire == 0:
        out.append(value - (1 << 64) if value >= 1 << 63 else value)
        return
    if wire != 2:
        raise OnnxError("an integer list has the wrong wire type")
    pos, end = value
    while pos < end:
        v, pos = _varint(buf, pos, end)
        out.append(v - (1 << 64) if v >= 1 << 63 else v)


def _floats(buf: bytes, wire: int, value: Any, out: list[float]) -> None:
    if wire == 5:
        out.append(struct.unpack("<f", value)[0])
        return
    if wire != 2 or (value[1] - value[0]) % 4:
        raise OnnxError("a float list has the wrong wire type or length")
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
    """(name, data type, numpy array) of a TensorProto; checks sizes before allocating."""
    dims: list[int] = []
    dtype = 0
    name = ""
    raw: tuple[int, int] | None = None
    floats: list[float] = []
    int32s: list[int] = []
    int64s: list[int] = []
    for number, wire, value in _fields(buf, *span):
        if number == 1:
            _ints(buf, wire, value, dims)
        elif number == 2 and wire == 0:
            dtype = value
        elif number == 8 and wire == 2:
            name = _text(buf, value)
        elif number == 9 and wire == 2:
            raw = value
        elif number == 4:
            _floats(buf, wire, value, floats)
        elif number == 5:
            _ints(buf, wire, value, int32s)
        elif number == 7:
            _ints(buf, wire, value, int64s)
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
        array = np.frombuffer(buf, np_type, count, raw[0]).reshape(dims)
    else:
        values: list[Any]
        if dtype == FLOAT:
            values = floats
        elif dtype == INT64:
            values = int64s
        elif dtype in (INT32, INT16, INT8, UINT16, UINT8, BOOL, FLOAT16):
            values = int32s
        else:
            values = []
        if len(values) != count:
            raise OnnxError(
                f"tensor {name!r} declares {count:,} elements but holds {len(values):,}"
            )
        if dtype == FLOAT16:  # the bit patterns, one per int32
            array = np.array(values, dtype="<u2").view("<f2").reshape(dims)
        else:
            array = np.array(values, dtype=np_type).reshape(dims)
    return name, dtype, array


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


# -- compiling -------------------------------------------------------------------------------

_ATTRS: dict[str, dict[str, int]] = {
    "Conv": {
        "kernel_shape": _A_INTS,
        "strides": _A_INTS,
        "pads": _A_INTS,
        "dilations": _A_INTS,
        "group": _A_INT,
        "auto_pad": _A_STRING,
    },
    "ConvTranspose": {
        "kernel_shape": _A_INTS,
        "strides": _A_INTS,
        "pads": _A_INTS,
        "dilations": _A_INTS,
        "group": _A_INT,
        "auto_pad": _A_STRING,
        "output_padding": _A_INTS,
    },
    "BatchNormalization": {"epsilon": _A_FLOAT, "momentum": _A_FLOAT, "training_mode": _A_INT},
    "Relu": {},
    "Sigmoid": {},
    "Add": {},
    "Cast": {"to": _A_INT, "saturate": _A_INT},
}
_INPUTS = {
    "Conv": (2, 3),
    "ConvTranspose": (2, 3),
    "BatchNormalization": (5, 5),
    "Relu": (1, 1),
    "Sigmoid": (1, 1),
    "Add": (2, 2),
    "Cast": (1, 1),
}


def _check_node(node: Node) -> None:
    if node.domain not in ("", "ai.onnx"):
        raise OnnxError(f"{node.describe()} is from operator domain {node.domain!r}")
    allowed = _ATTRS.get(node.op)
    if allowed is None:
        raise OnnxError(f"{node.describe()}: operator {node.op!r} is not supported")
    for attr in node.attrs.values():
        if attr.name not in allowed:
            raise OnnxError(f"{node.describe()}: attribute {attr.name!r} is not supported")
        if attr.kind != allowed[attr.name]:
            raise OnnxError(f"{node.describe()}: attribute {attr.name!r} has the wrong type")
    lo, hi = _INPUTS[node.op]
    if not lo <= len(node.inputs) <= hi or len(node.outputs) != 1 or "" in node.inputs:
        raise OnnxError(f"{node.describe()} has an unsupported number of inputs or outputs")


@dataclass
class _Geometry:
    kh: int
    kw: int
    sh: int = 1
    sw: int = 1
    dh: int = 1
    dw: int = 1
    pt: int = 0
    pl: int = 0
    pb: int = 0
    pr: int = 0

    @property
    def span_h(self) -> int:
        return (self.kh - 1) * self.dh + 1

    @property
    def span_w(self) -> int:
        return (self.kw - 1) * self.dw + 1


def _geometry(node: Node, kernel: tuple[int, int]) -> _Geometry:
    def ints(name: str, default: list[int], size: int) -> list[int]:
        attr = node.attrs.get(name)
        values = list(attr.value) if attr is not None else default
        if len(values) != size:
            raise OnnxError(f"{node.describe()}: {name} must have {size} values, has {values}")
        return values

    kh, kw = ints("kernel_shape", list(kernel), 2)
    if (kh, kw) != kernel:
        raise OnnxError(f"{node.describe()}: kernel_shape {[kh, kw]} does not match the weights")
    sh, sw = ints("strides", [1, 1], 2)
    dh, dw = ints("dilations", [1, 1], 2)
    pt, pl, pb, pr = ints("pads", [0, 0, 0, 0], 4)
    auto = node.attrs.get("auto_pad")
    if auto is not None and auto.value not in (b"NOTSET", b"VALID"):
        raise OnnxError(f"{node.describe()}: auto_pad {auto.value!r} is not supported")
    if auto is not None and auto.value == b"VALID" and any((pt, pl, pb, pr)):
        raise OnnxError(f"{node.describe()}: auto_pad VALID with explicit pads")
    if not (1 <= kh <= MAX_KERNEL and 1 <= kw <= MAX_KERNEL):
        raise OnnxError(f"{node.describe()}: kernel {kh}x{kw} is not supported")
    if not (1 <= sh <= MAX_STRIDE and 1 <= sw <= MAX_STRIDE):
        raise OnnxError(f"{node.describe()}: strides {[sh, sw]} are not supported")
    if not (1 <= dh <= MAX_DILATION and 1 <= dw <= MAX_DILATION):
        raise OnnxError(f"{node.describe()}: dilations {[dh, dw]} are not supported")
    if not all(0 <= p <= MAX_PAD for p in (pt, pl, pb, pr)):
        raise OnnxError(f"{node.describe()}: pads {[pt, pl, pb, pr]} are not supported")
    return _Geometry(kh, kw, sh, sw, dh, dw, pt, pl, pb, pr)


@dataclass
class _Epilogue:
    kind: str  # "relu", "sigmoid", "add", "affine"
    operand: str = ""  # "add": the tensor added
    constant: Any = None  # "add" of a constant, "affine": (scale, shift)


@dataclass
class _Conv:
    """One convolution stage of a chain, with what is fused after it."""

    geo: _Geometry
    cin: int
    cout: int
    group: int
    weight: Any  # float32 (cout, cin / group, kh, kw) until prepared
    bias: Any  # float32 (cout,)
    epilogue: list[_Epilogue] = field(default_factory=list)
    kind: str = ""  # set by prepare(): "copy", "pointwise", "dense", "depthwise", "grouped"
    packed: Any = None
    _weight_tile: Any = None
    _bias_rows: Any = None

    def prepare(self) -> None:
        g = self.geo
        w = self.weight
        if self.kind == "copy":
            return
        if self.group == 1 and g.kh == g.kw == 1:
            self.kind = "pointwise"
            self.packed = np.ascontiguousarray(w[:, :, 0, 0].T)
        elif self.group == 1:
            self.kind = "dense"  # rows of im2col are (dy, dx, cin)
            self.packed = np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(-1, self.cout))
        elif self.group == self.cin == self.cout:
            self.kind = "depthwise"
            self.packed = np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))  # (kh, kw, c)
            chunk = max(1, DW_CHUNK // self.cout)
            tile = np.broadcast_to(self.packed[:, :, None, :], (g.kh, g.kw, chunk, self.cout))
            self._weight_tile = np.ascontiguousarray(tile)
        else:
            self.kind = "grouped"
            og = self.cout // self.group
            self.packed = [
                np.ascontiguousarray(w[i * og : (i + 1) * og].transpose(2, 3, 1, 0).reshape(-1, og))
                for i in range(self.group)
            ]

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        g = self.geo
        ho = (h + g.pt + g.pb - g.span_h) // g.sh + 1
        wo = (w + g.pl + g.pr - g.span_w) // g.sw + 1
        if ho < 1 or wo < 1:
            raise OnnxError(f"a {g.kh}x{g.kw} convolution gets an input of only {h}x{w}")
        return ho, wo

    def tiles(self, wo: int) -> tuple[Any, Any]:
        """The depthwise weights repeated along a chunk of a row (about DW_CHUNK floats, so
        that the taps stay in the cache), and the bias along a row of ``wo`` pixels: numpy
        then runs long inner loops instead of one short one per pixel. Built once, grown
        when a wider row comes (a race only builds one twice)."""
        rows = self._bias_rows
        if rows is None or len(rows) < wo:
            rows = np.ascontiguousarray(np.broadcast_to(self.bias, (max(wo, 64), self.cout)))
            self._bias_rows = rows
        return self._weight_tile, rows[:wo]

    def compute(
        self, band: Array, rows: int, wo: int, tiles: tuple[Any, Any], dest: Any = None
    ) -> Array:
        """``rows`` output rows from ``band``, the padded input rows they need, written into
        ``dest`` (a C-contiguous rows x wo x cout array) when given."""
        g = self.geo
        weights, bias = tiles
        out: Array = np.empty((rows, wo, self.cout), np.float32) if dest is None else dest
        flat_out = out.reshape(rows * wo, self.cout)
        if self.kind == "pointwise":
            x = band if g.sh == g.sw == 1 else band[:: g.sh, :: g.sw]
            flat = np.ascontiguousarray(x[:rows, :wo]).reshape(-1, self.cin)
            np.matmul(flat, self.packed, out=flat_out)
        elif self.kind == "depthwise":
            self._depthwise(band, rows, wo, weights, out.reshape(rows, wo * self.cout))
        elif self.kind == "dense":
            self._dense(band, rows, wo, self.packed, flat_out)
        else:
            cg, og = self.cin // self.group, self.cout // self.group
            for i in range(self.group):
                part = band[:, :, i * cg : (i + 1) * cg]
                result = np.empty((rows * wo, og), np.float32)
                self._dense(part, rows, wo, self.packed[i], result)
                out[:, :, i * og : (i + 1) * og] = result.reshape(rows, wo, og)
        out += bias
        return out

    def _depthwise(self, band: Array, rows: int, wo: int, weights: Array, out: Array) -> None:
        """Per-channel k x k filter into ``out`` (rows x wo*c): for each group of taps that
        read the same column phase, one einsum over a strided view of the band does the
        multiply-accumulate of all of them in one pass per tap (numpy's own multiply and
        add would take two)."""
        g = self.geo
        c = self.cout
        first = True
        for phase in range(g.sw):
            # taps j whose column offset j * dw falls on this phase of the stride
            js = [j for j in range(g.kw) if (j * g.dw) % g.sw == phase]
            if not js:
                continue
            src = band if g.sw == 1 else np.ascontiguousarray(band[:, phase :: g.sw])
            x0 = (js[0] * g.dw) // g.sw
            x_step = (js[1] - js[0]) * g.dw // g.sw if len(js) > 1 else 1
            j_step = js[1] - js[0] if len(js) > 1 else 1
            # the view must stay inside src: the last tap's last row must end within it
            if (
                (g.kh - 1) * g.dh + (rows - 1) * g.sh >= src.shape[0]
                or x0 + (len(js) - 1) * x_step + wo > src.shape[1]
                or src.shape[2] != c
                or not src.flags.c_contiguous
            ):
                raise OnnxError("internal error: a depthwise band does not fit its taps")
            rs, ps, fs = src.strides[0], src.strides[1], src.strides[2]
            chunk = min(weights.shape[2], wo)  # pixels the weights are tiled over
            full, rest = divmod(wo, chunk)
            base = src[:, x0:]
            for start, count, size in ((0, full, chunk), (full * chunk, 1 if rest else 0, rest)):
                if not count:
                    continue
                view = np.lib.stride_tricks.as_strided(
                    base[:, start:],
                    shape=(g.kh, len(js), rows, count, size * c),
                    strides=(g.dh * rs, x_step * ps, g.sh * rs, size * ps, fs),
                    writeable=False,
                )
                taps = weights[:, js[0] : js[-1] + 1 : j_step, :size].reshape(
                    g.kh, len(js), size * c
                )
                target = out[:, start * c : (start + count * size) * c].reshape(
                    rows, count, size * c
                )
                if first:
                    np.einsum("ijrnk,ijk->rnk", view, taps, out=target)
                else:
                    target += np.einsum("ijrnk,ijk->rnk", view, taps)
            first = False

    def _dense(self, band: Array, rows: int, wo: int, packed: Array, out: Array) -> None:
        """im2col and one matrix product into ``out`` (rows*wo x cout). Columns are laid
        out (dy, dx, cin); with few input channels they are gathered plane by plane, which
        copies long runs instead of a few floats at a time."""
        g = self.geo
        cin = band.shape[2]
        taps = g.kh * g.kw
        planar = cin < 8
        cols = np.empty((taps * cin, rows, wo) if planar else (rows, wo, taps * cin), np.float32)
        for i in range(g.kh):
            for j in range(g.kw):
                y0, x0 = i * g.dh, j * g.dw
                k = (i * g.kw + j) * cin
                patch = band[
                    y0 : y0 + (rows - 1) * g.sh + 1 : g.sh, x0 : x0 + (wo - 1) * g.sw + 1 : g.sw
                ]
                if planar:
                    cols[k : k + cin] = patch.transpose(2, 0, 1)
                else:
                    cols[:, :, k : k + cin] = patch
        matrix = cols.reshape(taps * cin, rows * wo).T if planar else cols.reshape(rows * wo, -1)
        np.matmul(matrix, packed, out=out)


@dataclass
class _Unit:
    """What the runtime executes: a chain of convolution stages streamed in row bands, or a
    ConvTranspose computed whole. Either produces one tensor, ``output``."""

    kind: str  # "chain" or "deconv"
    source: str  # the materialized tensor it reads
    stages: list[_Conv]
    output: str
    last_node: int = 0
    # ConvTranspose only
    deconv: Any = None

    @property
    def tail(self) -> _Conv:
        return self.stages[-1]

    def external(self) -> list[str]:
        names = [self.source]
        for st in self.stages:
            names += [e.operand for e in st.epilogue if e.kind == "add" and e.operand]
        return names


@dataclass
class _Deconv:
    geo: _Geometry
    out_pad: tuple[int, int]
    cin: int
    cout: int
    group: int
    weight: Any  # (cin, cout / group, kh, kw)
    bias: Any
    packed: Any = None

    def prepare(self) -> None:
        cg = self.cin // self.group  # rows of a group's taps are its inputs; columns (kh, kw, out)
        self.packed = [
            np.ascontiguousarray(
                self.weight[i * cg : (i + 1) * cg].transpose(0, 2, 3, 1).reshape(cg, -1)
            )
            for i in range(self.group)
        ]

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        g = self.geo
        ho = g.sh * (h - 1) + self.out_pad[0] + g.span_h - g.pt - g.pb
        wo = g.sw * (w - 1) + self.out_pad[1] + g.span_w - g.pl - g.pr
        if ho < 1 or wo < 1:
            raise OnnxError(f"a ConvTranspose gets an input of only {h}x{w}")
        return ho, wo

    def run(self, x: Array) -> Array:
        g = self.geo
        h, w, _ = x.shape
        full_h = g.sh * (h - 1) + g.span_h + self.out_pad[0]
        full_w = g.sw * (w - 1) + g.span_w + self.out_pad[1]
        cg, og = self.cin // self.group, self.cout // self.group
        out = np.zeros((full_h, full_w, self.cout), np.float32)
        flat = x.reshape(h * w, self.cin)
        for grp in range(self.group):
            part = flat[:, grp * cg : (grp + 1) * cg]
            taps = (part @ self.packed[grp]).reshape(h, w, g.kh, g.kw, og)
            for i in range(g.kh):
                for j in range(g.kw):
                    y0, x0 = i * g.dh, j * g.dw
                    out[
                        y0 : y0 + g.sh * (h - 1) + 1 : g.sh,
                        x0 : x0 + g.sw * (w - 1) + 1 : g.sw,
                        grp * og : (grp + 1) * og,
                    ] += taps[:, :, i, j]
        out = out[g.pt : full_h - g.pb, g.pl : full_w - g.pr]
        out += self.bias
        return np.ascontiguousarray(out)


def _float(constants: dict[str, Any], name: str, node: Node) -> Any:
    array = constants.get(name)
    if array is None:
        raise OnnxError(f"{node.describe()}: input {name!r} must be a constant")
    if array.dtype.kind != "f":
        raise OnnxError(f"{node.describe()}: input {name!r} is not floating point")
    return np.asarray(array, dtype=np.float32)


def _affine(constants: dict[str, Any], node: Node) -> tuple[Any, Any]:
    scale, shift, mean, var = (_float(constants, name, node) for name in node.inputs[1:5])
    if not scale.ndim == shift.ndim == mean.ndim == var.ndim == 1:
        raise OnnxError(f"{node.describe()}: parameters must be vectors")
    if not len(scale) == len(shift) == len(mean) == len(var):
        raise OnnxError(f"{node.describe()}: parameters differ in length")
    mode = node.attrs.get("training_mode")
    if mode is not None and mode.value != 0:
        raise OnnxError(f"{node.describe()}: training mode is not supported")
    eps = node.attrs["epsilon"].value if "epsilon" in node.attrs else 1e-5
    factor = (scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)).astype(np.float32)
    return factor, (shift - mean * factor).astype(np.float32)


class Network:
    """A compiled model: call :meth:`run` with the input tensor (NCHW, batch of one)."""

    def __init__(self, graph: Graph) -> None:
        for node in graph.nodes:
            _check_node(node)
        inputs = [n for n in graph.inputs if n not in graph.initializers]
        if len(inputs) != 1:
            raise OnnxError(f"the graph must have one input, it has {len(inputs)}")
        self.input = inputs[0]
        self.outputs = list(graph.outputs)
        self.units: list[_Unit] = []
        self._needs: dict[tuple[str, ...], list[bool]] = {}
        self._compile(graph)
        self._plan()

    # -- compile-time ----------------------------------------------------------------------

    def _compile(self, graph: Graph) -> None:
        consumers: dict[str, int] = {}
        for node in graph.nodes:
            for name in node.inputs:
                consumers[name] = consumers.get(name, 0) + 1
        for name in self.outputs:
            consumers[name] = consumers.get(name, 0) + 1  # a graph output is always kept
        produced: dict[str, _Unit | None] = {self.input: None}  # tensor -> the unit ending in it
        constants = dict(graph.initializers)

        def open_unit(name: str) -> _Unit | None:
            """The unit whose output ``name`` is, when it may be extended past it."""
            unit = produced.get(name)
            if unit is None or unit.output != name or consumers.get(name, 0) != 1:
                return None
            return unit

        def available(name: str, node: Node) -> None:
            if name not in produced:
                raise OnnxError(f"{node.describe()}: input {name!r} is not computed before it")

        for index, node in enumerate(graph.nodes):
            out = node.outputs[0]
            if out in produced or out in constants:
                raise OnnxError(f"{node.describe()}: output {out!r} is produced twice")
            op = node.op
            if op == "Cast":
                to = node.attrs.get("to")
                if to is None or to.value not in (FLOAT, FLOAT16):
                    raise OnnxError(f"{node.describe()}: only casts to FLOAT/FLOAT16 are supported")
                src = node.inputs[0]
                if src in constants:  # a weight stored as float16, say: fold it
                    constants[out] = np.asarray(constants[src], dtype=np.float32)
                    continue
                op = "Identity"
            if op in ("Conv", "ConvTranspose"):
                x = node.inputs[0]
                available(x, node)
                weight = _float(constants, node.inputs[1], node)
                if weight.ndim != 4:
                    raise OnnxError(f"{node.describe()}: only 2-D convolutions are supported")
                group = node.attrs["group"].value if "group" in node.attrs else 1
                geo = _geometry(node, (int(weight.shape[2]), int(weight.shape[3])))
                if op == "Conv":
                    cout, cin = int(weight.shape[0]), int(weight.shape[1]) * group
                else:
                    cin, cout = int(weight.shape[0]), int(weight.shape[1]) * group
                if group < 1 or cin % group or cout % group or not cout:
                    raise OnnxError(f"{node.describe()}: group {group} does not fit the weights")
                bias = np.zeros(cout, np.float32)
                if len(node.inputs) == 3:
                    bias = _float(constants, node.inputs[2], node)
                    if bias.shape != (cout,):
                        raise OnnxError(f"{node.describe()}: bias does not fit the weights")
                if op == "Conv":
                    stage = _Conv(geo, cin, cout, group, weight, bias.copy())
                    unit = open_unit(x)
                    if unit is not None:
                        unit.stages.append(stage)
                        unit.output = out
                    else:
                        unit = _Unit("chain", x, [stage], out)
                        self.units.append(unit)
                else:
                    pads = node.attrs.get("output_padding")
                    out_pad = tuple(pads.value) if pads is not None else (0, 0)
                    if len(out_pad) != 2 or not all(
                        0 <= p < max(s, d)
                        for p, s, d in zip(out_pad, (geo.sh, geo.sw), (geo.dh, geo.dw), strict=True)
                    ):
                        raise OnnxError(f"{node.describe()}: output_padding {out_pad} is invalid")
                    deconv = _Deconv(
                        geo, (out_pad[0], out_pad[1]), cin, cout, group, weight, bias.copy()
                    )
                    unit = _Unit("deconv", x, [], out, deconv=deconv)
                    unit.stages.append(
                        _Conv(_Geometry(1, 1), cout, cout, 1, None, None, kind="copy")
                    )
                    self.units.append(unit)
                unit.last_node = index
                produced[out] = unit
                continue
            # pointwise: BatchNormalization, Relu, Sigmoid, Add, Identity (a Cast)
            x = node.inputs[0]
            other = ""
            if op == "Add":
                a, b = node.inputs
                for name in (a, b):
                    if name not in constants:
                        available(name, node)
                if open_unit(a) is None and open_unit(b) is not None:
                    a, b = b, a
                if a in constants:
                    a, b = b, a
                x, other = a, b
                if x in constants:
                    raise OnnxError(f"{node.describe()}: adding two constants is not supported")
            available(x, node)
            unit = open_unit(x)
            if unit is None:
                unit = _Unit(
                    "chain", x, [_Conv(_Geometry(1, 1), 0, 0, 1, None, None, kind="copy")], out
                )
                self.units.append(unit)
            tail = unit.tail
            if op == "BatchNormalization":
                factor, shift = _affine(constants, node)
                if unit.deconv is not None and len(unit.stages) == 1 and not tail.epilogue:
                    d = unit.deconv  # weights (cin, cout / group, kh, kw)
                    if len(factor) != d.cout:
                        raise OnnxError(f"{node.describe()} does not fit its input's channels")
                    og = d.cout // d.group
                    per_input = np.repeat(factor.reshape(d.group, 1, og), d.cin // d.group, axis=1)
                    d.weight = d.weight * per_input.reshape(d.cin, og, 1, 1)
                    d.bias = d.bias * factor + shift
                elif tail.kind != "copy" and not tail.epilogue:
                    if len(factor) != tail.cout:
                        raise OnnxError(f"{node.describe()} does not fit its input's channels")
                    tail.weight = tail.weight * factor[:, None, None, None]
                    tail.bias = tail.bias * factor + shift
                else:
                    tail.epilogue.append(_Epilogue("affine", constant=(factor, shift)))
            elif op in ("Relu", "Sigmoid"):
                tail.epilogue.append(_Epilogue(op.lower()))
            elif op == "Add":
                if other in constants:
                    tail.epilogue.append(
                        _Epilogue("add", constant=_nchw_constant(constants[other], node))
                    )
                else:
                    tail.epilogue.append(_Epilogue("add", operand=other))
            unit.output = out
            unit.last_node = index
            produced[out] = unit
        for name in self.outputs:
            if name not in produced or produced[name] is None:
                raise OnnxError(f"graph output {name!r} is not computed by the graph")
        self.units.sort(key=lambda u: u.last_node)
        for unit in self.units:
            for stage in unit.stages:
                stage.prepare()
            if unit.deconv is not None:
                unit.deconv.prepare()

    def _plan(self) -> None:
        """When each materialized tensor can be dropped: after its last reader."""
        last: dict[str, int] = {}
        for i, unit in enumerate(self.units):
            for name in unit.external():
                last[name] = i
        self._drop: list[list[str]] = [[] for _ in self.units]
        for name, i in last.items():
            if name not in self.outputs:
                self._drop[i].append(name)

    # -- run-time --------------------------------------------------------------------------

    def run(
        self, x: Any, outputs: Sequence[str] | None = None, *, channels_last: bool = False
    ) -> list[Any]:
        """The named outputs (all graph outputs by default) for input ``x``, an array of shape
        (1, C, H, W), or (1, H, W, C) with ``channels_last``; each output comes back as
        float32 (1, C', H', W'). Only what the named outputs need is computed."""
        wanted = tuple(outputs) if outputs is not None else tuple(self.outputs)
        for name in wanted:
            if name not in self.outputs:
                raise OnnxError(f"{name!r} is not an output of the model")
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[0] != 1 or min(x.shape) < 1:
            raise OnnxError(f"the input must have shape (1, C, H, W), not {x.shape}")
        image = x[0] if channels_last else x[0].transpose(1, 2, 0)
        workers = _Workers()
        try:
            with _BLAS.single():
                return self._run(np.ascontiguousarray(image, dtype=np.float32), wanted, workers)
        finally:
            workers.close()

    def _needed(self, wanted: tuple[str, ...]) -> list[bool]:
        """Which units the outputs ``wanted`` depend on."""
        needed = self._needs.get(wanted)
        if needed is None:
            by_output = {unit.output: i for i, unit in enumerate(self.units)}
            needed = [False] * len(self.units)
            todo = [by_output[name] for name in wanted]
            while todo:
                i = todo.pop()
                if not needed[i]:
                    needed[i] = True
                    todo += [by_output[n] for n in self.units[i].external() if n in by_output]
            self._needs[wanted] = needed
        return needed

    def _run(self, image: Any, wanted: tuple[str, ...], workers: _Workers) -> list[Any]:
        limit = max(GROWTH * image.size, 1 << 20)
        env: dict[str, Any] = {self.input: image}
        needed = self._needed(wanted)
        for unit, drop, need in zip(self.units, self._drop, needed, strict=True):
            if not need:
                pass
            elif unit.kind == "deconv":
                source = env[unit.source]
                if source.shape[2] != unit.deconv.cin:
                    raise OnnxError(
                        f"a layer expects {unit.deconv.cin} channels but gets {source.shape[2]} "
                        f"(on the way to {unit.output!r})"
                    )
                ho, wo = unit.deconv.out_size(*source.shape[:2])
                if ho * wo * unit.deconv.cout > limit:
                    raise OnnxError("the network's activations grow beyond any sensible size")
                env[unit.output] = self._chain(
                    unit, unit.deconv.run(source), env, limit, workers, owned=True
                )
            else:
                env[unit.output] = self._chain(unit, env[unit.source], env, limit, workers)
            for name in drop:
                env.pop(name, None)
        return [np.ascontiguousarray(env[name].transpose(2, 0, 1))[None] for name in wanted]

    @staticmethod
    def _chain(
        unit: _Unit,
        source: Any,
        env: dict[str, Any],
        limit: int,
        workers: _Workers,
        *,
        owned: bool = False,
    ) -> Any:
        stages = unit.stages
        channels = [int(source.shape[2])]
        shapes = [(int(source.shape[0]), int(source.shape[1]))]
        for stage in stages:
            if stage.kind == "copy":
                channels.append(channels[-1])
                shapes.append(shapes[-1])
                continue
            if stage.cin != channels[-1]:
                raise OnnxError(
                    f"a layer expects {stage.cin} channels but gets {channels[-1]} "
                    f"(on the way to {unit.output!r})"
                )
            channels.append(stage.cout)
            shapes.append(stage.out_size(*shapes[-1]))
            if shapes[-1][0] * shapes[-1][1] * stage.cout > limit:
                raise OnnxError("the network's activations grow beyond any sensible size")
        # rows of the last stage per band: the widest stage's share of a band (its output
        # rows, and for im2col its column matrix) should stay near BAND_ELEMENTS
        widest, ratio = 1, 1
        for k in range(len(stages) - 1, -1, -1):
            stage, (_, w) = stages[k], shapes[k + 1]
            width = w * channels[k + 1]
            if stage.kind in ("dense", "grouped"):
                width += w * stage.geo.kh * stage.geo.kw * channels[k]
            widest = max(widest, ratio * width)
            ratio *= stage.geo.sh
        final_h, final_w = shapes[-1]
        band = max(1, min(final_h, BAND_ELEMENTS // widest))
        work_size = sum(h * w * c for (h, w), c in zip(shapes[1:], channels[1:], strict=True))
        tiles = [
            None if st.kind == "copy" else st.tiles(shapes[k + 1][1]) for k, st in enumerate(stages)
        ]
        if owned:  # a ConvTranspose's output: its epilogue runs in place, on all rows at once
            head = _ChainRun(
                stages[:1], shapes[:2], channels[:2], tiles[:1], source, env=env, owned=True
            )
            source = head.pieces(0, 0, shapes[1][0])[0]
            stages, shapes, channels, tiles = stages[1:], shapes[1:], channels[1:], tiles[1:]
            if not stages:
                return source
        # a ReLU that ends a stage can be applied by the next one, as it copies its input
        relu_in = [False] + [
            bool(prev.epilogue)
            and prev.epilogue[-1].kind == "relu"
            and nxt.kind in ("depthwise", "dense", "grouped")
            for prev, nxt in itertools.pairwise(stages)
        ]
        out = np.empty((final_h, final_w, channels[-1]), np.float32)

        def work(lo: int, hi: int) -> None:
            runner = _ChainRun(
                stages, shapes, channels, tiles, source, env=env, owned=False, relu_in=relu_in
            )
            for a in range(lo, hi, band):
                b = min(hi, a + band)
                runner.fill(out[a:b], a, b)

        # the rows are cut into a few runs per thread (each run recomputes the few rows it
        # shares with its neighbour) that the threads, this one included, take in turn: on
        # a busy machine a thread that gets less time simply takes fewer runs. numpy and
        # BLAS let go of the GIL while they compute.
        threads = _threads() if work_size >= PARALLEL_MIN else 1
        runs = min(TASKS_PER_THREAD * threads, final_h) if threads > 1 else 1
        if runs <= 1:
            work(0, final_h)
            return out
        step = -(-final_h // runs)
        band = min(band, step)
        todo = iter(range(0, final_h, step))
        lock = threading.Lock()

        def drain() -> None:
            while True:
                with lock:
                    lo = next(todo, None)
                if lo is None:
                    return
                work(lo, min(final_h, lo + step))

        futures: list[Future[None]] = [workers.submit(drain) for _ in range(threads - 1)]
        try:
            drain()
        finally:
            for future in futures:
                future.result()
        return out


def _nchw_constant(array: Any, node: Node) -> Any:
    """A constant that broadcasts against NCHW activations, made to broadcast against HWC."""
    value = np.asarray(array, dtype=np.float32)
    if value.ndim > 4:
        raise OnnxError(f"{node.describe()}: constant of rank {value.ndim}")
    value = value.reshape((1,) * (4 - value.ndim) + value.shape)
    if value.shape[0] != 1:
        raise OnnxError(f"{node.describe()}: constant with a batch dimension")
    return np.ascontiguousarray(value[0].transpose(1, 2, 0))


_ZEROS = [np.zeros(0, np.float32)]


class _ChainRun:
    """One evaluation of (part of) a chain. Each stage keeps the rows it computed last as a
    list of pieces, so rows that overlap between bands are computed once and never copied
    just to be joined: the next stage copies the pieces straight into its padded band."""

    def __init__(
        self,
        stages: list[_Conv],
        shapes: list[tuple[int, int]],
        channels: list[int],
        tiles: list[Any],
        source: Any,
        *,
        env: dict[str, Any],
        owned: bool,
        relu_in: list[bool] | None = None,
    ) -> None:
        self.stages = stages
        self.shapes = shapes
        self.channels = channels
        self.source = source
        self.env = env
        self.owned = owned  # the source is this run's own: a copy stage may work in place
        self.cache: list[list[tuple[int, Any]]] = [[] for _ in stages]
        self.tiles = tiles
        # relu_in[i]: stage i applies its input's final ReLU while copying it into its band
        self.relu_in = relu_in or [False] * len(stages)

    def pieces(self, i: int, a: int, b: int) -> list[Any]:
        """Rows [a, b) of the output of stage ``i`` (stage -1: the chain's source), as a list
        of arrays to be read one after the other."""
        if i < 0:
            return [self.source[a:b]]
        cache = [(c0, buf) for c0, buf in self.cache[i] if c0 + len(buf) > a]
        out = [buf[max(a - c0, 0) : b - c0] for c0, buf in cache if c0 < b]
        done = cache[-1][0] + len(cache[-1][1]) if cache else a
        if done < b:
            new = self._compute(i, max(done, a), b)
            cache.append((max(done, a), new))
            out.append(new)
        self.cache[i] = cache
        return out

    @staticmethod
    def _zeros(width: int, channels: int) -> Any:
        """A row of zeros: numpy's maximum against an array is several times faster than
        against the scalar 0 (which has no vectorised loop). One read-only buffer, grown
        when a wider row comes."""
        size = width * channels
        if len(_ZEROS[0]) < size:
            zeros = np.zeros(max(size, 1 << 16), np.float32)
            zeros.flags.writeable = False
            _ZEROS[0] = zeros
        return _ZEROS[0][:size].reshape(width, channels)

    def fill(self, dest: Any, a: int, b: int) -> None:
        """Compute rows [a, b) of the last stage straight into ``dest``."""
        self._compute(len(self.stages) - 1, a, b, dest)

    def _compute(self, i: int, a: int, b: int, dest: Any = None) -> Any:
        stage = self.stages[i]
        h_in, w_in = self.shapes[i]
        if stage.kind == "copy":
            parts = self.pieces(i - 1, a, b)
            if self.owned and i == 0 and dest is None:
                out = parts[0]
            else:
                out = (
                    np.empty((b - a, w_in, self.channels[i]), np.float32) if dest is None else dest
                )
                np.concatenate(parts, out=out)
        else:
            g = stage.geo
            lo = a * g.sh - g.pt
            hi = (b - 1) * g.sh - g.pt + g.span_h
            clo, chi = max(lo, 0), min(hi, h_in)
            parts = self.pieces(i - 1, clo, chi) if chi > clo else []
            band: Any
            if stage.kind == "pointwise" and not (g.pt or g.pb or g.pl or g.pr):
                band = parts[0] if len(parts) == 1 else np.concatenate(parts)
            else:  # a padded band: zero borders, the rows copied in (with the ReLU if put here)
                width = w_in + g.pl + g.pr
                band = np.empty((hi - lo, width, self.channels[i]), np.float32)
                band[: clo - lo] = 0
                band[chi - lo :] = 0
                band[clo - lo : chi - lo, : g.pl] = 0
                band[clo - lo : chi - lo, g.pl + w_in :] = 0
                row = clo - lo
                for part in parts:
                    target = band[row : row + len(part), g.pl : g.pl + w_in]
                    if self.relu_in[i]:
                        np.maximum(part, self._zeros(w_in, self.channels[i]), out=target)
                    else:
                        target[...] = part
                    row += len(part)
            out = stage.compute(band, b - a, self.shapes[i + 1][1], self.tiles[i], dest)
        shape = (b - a, *self.shapes[i + 1], self.channels[i + 1])
        epilogue = stage.epilogue
        if i + 1 < len(self.stages) and self.relu_in[i + 1]:
            epilogue = epilogue[:-1]  # the next stage applies this ReLU as it copies
        for ep in epilogue:
            if ep.kind == "relu":
                np.maximum(out, self._zeros(shape[2], shape[3]), out=out)
            elif ep.kind == "sigmoid":
                np.negative(out, out=out)
                with np.errstate(over="ignore"):  # exp(88+) is inf, and 1 / (1 + inf) is 0
                    np.exp(out, out=out)
                out += 1
                np.reciprocal(out, out=out)
            elif ep.kind == "affine":
                if ep.constant[0].shape[0] != shape[-1]:
                    raise OnnxError("a BatchNormalization does not fit its input's channels")
                out *= ep.constant[0]
                out += ep.constant[1]
            elif ep.operand:
                other = self.env[ep.operand]
                if other.shape != (self.shapes[i + 1] + (shape[-1],)):
                    raise OnnxError(f"Add of tensors of different shapes ({ep.operand!r})")
                out += other[a:b]
            else:
                const = ep.constant
                if const.shape[0] != 1:
                    const = const[a:b] if const.shape[0] == self.shapes[i + 1][0] else None
                if const is None or np.broadcast_shapes(const.shape, shape) != shape:
                    raise OnnxError("an Add constant does not fit its input's shape")
                out += const
        return out


def load(data: bytes) -> Network:
    """Parse and compile an ONNX model."""
    return Network(parse(data))


# -- threads ---------------------------------------------------------------------------------


def _threads() -> int:
    """Threads a chain's bands are spread over: the cores this process may use, at most
    MAX_THREADS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cores))


class _Workers:
    """The threads one run shares its bands with: started when the first chain big enough
    to share asks for them, and stopped when the run ends, so that no idle thread outlives
    a run (and a later fork, as ``veilpix scrub -j N`` does, inherits none)."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, fn: Any) -> Future[None]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=max(1, _threads() - 1), thread_name_prefix="veilpix-onnx"
            )
        return self._pool.submit(fn)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class _BlasThreads:
    """Runs OpenBLAS single-threaded while a network runs, and restores it after.

    The runtime makes thousands of band-sized matrix products and spreads the bands over its
    own threads. OpenBLAS would split each product over its own threads too, and its threads
    wait for each other by spinning: on a busy machine one descheduled thread stalls every
    product (measured: 3 ms instead of 0.3 ms each, ten times slower overall). This is what
    ``threadpoolctl`` does, done with ctypes on the OpenBLAS numpy has loaded; where none is
    found (another BLAS, another platform) it does nothing. The setting is process-wide, so
    concurrent runs count themselves in and the last one out restores it.
    """

    _SYMBOLS = (
        ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
        ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
        ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
        ("openblas_set_num_threads", "openblas_get_num_threads"),
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._libs: list[tuple[Any, Any]] | None = None
        self._saved: list[int] = []

    def _find(self) -> list[tuple[Any, Any]]:
        paths: list[str] = []
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            maps = ""
        for line in maps.splitlines():
            path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
            if "openblas" in path.lower() and path not in paths:
                paths.append(path)
        if not maps:  # not Linux: the copy numpy's wheel carries
            base = Path(np.__file__).resolve().parent
            for folder in (base / ".dylibs", base.parent / "numpy.libs"):
                if folder.is_dir():
                    paths += [
                        str(p) for p in sorted(folder.iterdir()) if "openblas" in p.name.lower()
                    ]
        found = []
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for setter, getter in self._SYMBOLS:
                if hasattr(lib, setter) and hasattr(lib, getter):
                    found.append((getattr(lib, setter), getattr(lib, getter)))
                    break
        return found

    def reset(self) -> None:
        """After a fork: no run is in progress in this process (whatever the parent did)."""
        self._lock = threading.Lock()
        self._users = 0

    @contextlib.contextmanager
    def single(self) -> Iterator[None]:
        with self._lock:
            if self._libs is None:
                self._libs = self._find() if sys.platform != "emscripten" else []
            if self._users == 0:
                self._saved = [int(get()) for _, get in self._libs]
                for set_, _ in self._libs:
                    set_(1)
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    for (set_, _), saved in zip(self._libs, self._saved, strict=True):
                        set_(max(1, saved))


_BLAS = _BlasThreads()


def _after_fork() -> None:
    """In a child process (``veilpix scrub -j N`` forks): no run is in progress here, and
    the BLAS lock may have been held by a thread of the parent; start afresh."""
    _BLAS.reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
