"""The compiled network: :class:`Network` (compile a :class:`Graph`, then run it) and
:func:`load`.

At compile time the graph's nodes become a list of units (``_layers._Unit``: a chain of
convolutions with what is fused after them, or a ConvTranspose) in execution order, and each
materialized tensor is given the unit after which it can be dropped. At run time each chain
is evaluated in bands of rows by a :class:`_ChainRun`, the bands shared out among a few
threads (``_threads``), and every activation's size is checked against the input's
(``GROWTH``) before it is allocated.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np  # noqa: TID253 - the runtime is numpy throughout

from veilpix.image.onnx._layers import (
    _affine,
    _check_node,
    _Conv,
    _Deconv,
    _Epilogue,
    _float,
    _Geometry,
    _geometry,
    _Unit,
)
from veilpix.image.onnx._proto import FLOAT, FLOAT16, Graph, Node, OnnxError, parse
from veilpix.image.onnx._threads import _BLAS, _Workers, thread_count

GROWTH = 96  # no activation may hold more than this many elements per input element
BAND_ELEMENTS = 1 << 20  # float32 elements a band of a fused chain aims to hold at its widest
PARALLEL_MIN = 1 << 20  # a chain whose outputs hold fewer floats runs on one thread
TASKS_PER_THREAD = 2  # runs of rows per thread and chain: slack for a thread that gets less time


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
        for name, array in constants.items():
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                # a NaN weight makes every score NaN, which no threshold passes: the model
                # would find no face and the image would go out unblurred
                raise OnnxError(f"initializer {name!r} holds NaN or infinite values")

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
        threads = thread_count() if work_size >= PARALLEL_MIN else 1
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
