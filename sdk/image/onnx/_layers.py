"""The layers a model compiles into, and the arithmetic of each.

:func:`_check_node` refuses any operator, attribute or attribute type the runtime does not
know; :func:`_geometry` reads a convolution's kernel, strides, dilations and pads (within the
limits below); :class:`_Conv` is one convolution stage of a chain (pointwise, dense im2col,
depthwise or grouped, with the BatchNormalization, ReLU, Sigmoid and Add fused after it) and
computes a band of rows of it; :class:`_Deconv` is a ConvTranspose, computed whole;
:class:`_Unit` is what ``Network`` executes: a chain of stages, or a ConvTranspose.
:func:`_float` and :func:`_affine` read constant inputs (weights, batch-norm parameters).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np  # noqa: TID253 - the layers compute with numpy

from veilpix.image.onnx._proto import _A_FLOAT, _A_INT, _A_INTS, _A_STRING, Node, OnnxError

if TYPE_CHECKING:
    import numpy.typing as npt

    Array = npt.NDArray[np.float32]

MAX_KERNEL = 15
MAX_STRIDE = 8
MAX_PAD = 16
MAX_DILATION = 8
DW_CHUNK = 4096  # floats of a row a depthwise filter's taps are tiled over


_CONV_ATTRS = {
    "kernel_shape": _A_INTS,
    "strides": _A_INTS,
    "pads": _A_INTS,
    "dilations": _A_INTS,
    "group": _A_INT,
    "auto_pad": _A_STRING,
}
_ATTRS: dict[str, dict[str, int]] = {
    "Conv": _CONV_ATTRS,
    "ConvTranspose": {**_CONV_ATTRS, "output_padding": _A_INTS},
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
