"""Requests checked against a version's recorded signature, and outputs in the two wire formats.

Pure functions (numpy and pandas only), so every bad input is a table-driven unit test. Each
problem is a :class:`RequestError` whose message names the field, what was sent and what is valid;
the app turns it into a 4xx and goes on serving.

Two request shapes carry the same rows:
  - ``POST /predict``: ``{"inputs": [{"f0": 0.1, ...}, ...]}`` (rows by input name; one row may be
    sent as a bare object);
  - the Open Inference Protocol v2: ``{"inputs": [{"name": "f0", "shape": [n], "datatype": "FP64",
    "data": [...]}, ...]}``, one tensor per input of the signature.
"""

from __future__ import annotations

import collections
import difflib
import functools
import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from cl_hpc.errors import ClHpcError
from cl_hpc.learn.contract import Signature, Spec

# Open Inference Protocol v2 datatypes by numpy dtype name, and the datatypes each spec accepts.
V2_TYPES = {"float64": "FP64", "float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32",
            "int16": "INT16", "int8": "INT8", "uint8": "UINT8", "bool": "BOOL", "str": "BYTES", "object": "BYTES"}
_INTS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
_ACCEPTS = {"float": ("FP16", "FP32", "FP64", *_INTS), "int": _INTS, "bool": ("BOOL",), "str": ("BYTES",)}


class RequestError(ClHpcError):
    """A request the server refuses: ``status`` is the HTTP code, ``field`` the part at fault."""

    def __init__(self, message: str, field: str, status: int = 422) -> None:
        super().__init__(message)
        self.field, self.status = field, status


def kind(spec: Spec) -> str:
    """float | int | bool | str: what JSON values a column of this spec takes."""
    if spec.dtype.startswith("float"):
        return "float"
    if spec.dtype.startswith(("int", "uint")):
        return "int"
    return "bool" if spec.dtype == "bool" else "str"


_WANTS = {"float": "a finite number", "int": "an integer", "bool": "true or false", "str": "a string"}


def check_size(rows: int, max_rows: int, field: str) -> None:
    if rows == 0:
        raise RequestError(f"{field} is empty: send 1 to {max_rows} rows", field)
    if rows > max_rows:
        raise RequestError(f"{field} has {rows} rows; the most one request may carry is {max_rows} "
                           f"(serve.max_batch_rows): split it", field, status=413)


def rows_frame(signature: Signature, inputs: Any, max_rows: int) -> pd.DataFrame:
    """``/predict``'s ``inputs`` (a list of row objects, or one object) as a frame of the signature's
    columns in its order; a RequestError for anything else."""
    rows = [inputs] if isinstance(inputs, Mapping) else inputs
    if not isinstance(rows, list):
        raise RequestError(f"inputs must be a list of rows (objects of {_names(signature)}) or one row; "
                           f"got {type(inputs).__name__}", "inputs")
    check_size(len(rows), max_rows, "inputs")
    expected = [s.name for s in signature.inputs]
    wanted = set(expected)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise RequestError(f"inputs[{i}] is a {type(row).__name__}; each row is an object of "
                               f"{_names(signature)}", f"inputs[{i}]")
        if row.keys() != wanted:
            raise RequestError(_name_problem(f"inputs[{i}]", row.keys(), expected), f"inputs[{i}]")
    if len({s.dtype for s in signature.inputs}) == 1 and kind(signature.inputs[0]) != "str":
        return _matrix_frame(signature.inputs, rows, expected)
    columns = {s.name: _column(s, [row[s.name] for row in rows], "inputs[{i}]." + s.name) for s in signature.inputs}
    return pd.DataFrame(columns, columns=expected)


def _matrix_frame(specs: Sequence[Spec], rows: list[Any], expected: list[str]) -> pd.DataFrame:
    """Inputs of one numeric dtype as one 2-D block: a third of the time of a frame built by column."""
    matrix = [[row[name] for name in expected] for row in rows]
    ok = _CHECKS[kind(specs[0])]
    if not all(ok(v) for values in matrix for v in values):
        for i, values in enumerate(matrix):  # only on the error path: find the first bad value, name it
            for spec, value in zip(specs, values):
                if not ok(value):
                    place = f"inputs[{i}].{spec.name}"
                    raise RequestError(f"{place} is {_shown(value)}; {spec.name} ({spec.dtype}) takes "
                                       f"{_WANTS[kind(spec)]}", place)
    try:
        with np.errstate(over="raise"):
            block = np.array(matrix, dtype=specs[0].dtype)
    except (OverflowError, FloatingPointError):  # a number out of the dtype's range: the column path names it
        columns = {s.name: _column(s, [row[s.name] for row in rows], "inputs[{i}]." + s.name) for s in specs}
        return pd.DataFrame(columns, columns=expected)
    return pd.DataFrame(block, columns=_index(tuple(expected)), copy=False)


@functools.lru_cache(maxsize=64)
def _index(names: tuple[str, ...]) -> pd.Index:
    """One column index per signature: pandas 3 builds a string index through Arrow (~100 us)."""
    return pd.Index(names)


def input_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The request's columns as arrays for the prediction log (views of a one-block frame's values;
    ``frame[name]`` would build a Series per column, ~50 us each)."""
    if len(set(frame.dtypes.tolist())) == 1 and frame.dtypes.iloc[0].kind in "biuf":
        block = frame.to_numpy()
        return {name: block[:, j] for j, name in enumerate(frame.columns.tolist())}
    return {name: frame[name].to_numpy() for name in frame.columns.tolist()}


def tensors_frame(signature: Signature, inputs: Any, max_rows: int) -> pd.DataFrame:
    """The v2 protocol's ``inputs`` (one tensor per signature input) as the same frame."""
    if not isinstance(inputs, list) or not all(isinstance(t, Mapping) for t in inputs):
        raise RequestError("inputs must be a list of tensors {name, shape, datatype, data}", "inputs")
    expected = [s.name for s in signature.inputs]
    if len(inputs) > 2 * len(expected):  # before any per-tensor work: a body of 10^5 tensors must not stall the loop
        raise RequestError(f"inputs has {len(inputs)} tensors; this version takes {len(expected)}: "
                           f"{', '.join(expected[:20])}", "inputs")
    named = {str(t.get("name")): t for t in inputs}
    if len(named) != len(inputs):
        counts = collections.Counter(str(t.get("name")) for t in inputs)
        twice = sorted(n for n, c in counts.items() if c > 1)
        raise RequestError(f"inputs name tensor {', '.join(map(repr, twice))} twice; send one tensor per input: "
                           f"{', '.join(expected)}", "inputs")
    if named.keys() != set(expected):
        raise RequestError(_name_problem("inputs", named.keys(), expected), "inputs")
    specs = {s.name: s for s in signature.inputs}
    columns = {name: _tensor(specs[name], named[name], max_rows) for name in expected}
    lengths = {name: len(v) for name, v in columns.items()}
    if len(set(lengths.values())) > 1:
        raise RequestError(f"the input tensors have different row counts {lengths}; each carries one value per row",
                           "inputs")
    return pd.DataFrame(columns, columns=expected)


def _tensor(spec: Spec, tensor: Mapping[str, Any], max_rows: int) -> np.ndarray:
    where = f"inputs[{spec.name}]"
    datatype = str(tensor.get("datatype", "")).upper()
    accepted = _ACCEPTS[kind(spec)]
    if datatype not in accepted:
        raise RequestError(f"{where}.datatype is {tensor.get('datatype')!r}; {spec.name} ({spec.dtype}) takes "
                           f"{', '.join(accepted)}", f"{where}.datatype")
    shape = tensor.get("shape")
    if not (isinstance(shape, list) and shape and all(isinstance(n, int) and n >= 0 for n in shape)
            and (len(shape) == 1 or shape[1:] == [1])):
        raise RequestError(f"{where}.shape is {shape!r}; {spec.name} is one value per row: [rows] or [rows, 1]",
                           f"{where}.shape")
    data = _flat(tensor.get("data"))
    if data is None or len(data) != shape[0]:
        got = "no list" if data is None else f"{len(data)} values"
        raise RequestError(f"{where}.data has {got} but shape {shape} says {shape[0]}", f"{where}.data")
    check_size(shape[0], max_rows, f"{where}.shape[0]")
    return _column(spec, data, f"{where}.data[{{i}}]")


def _flat(data: Any) -> Optional[list[Any]]:
    """v2 data may be flat or nested row-major; this protocol's inputs are one value per row."""
    if not isinstance(data, list):
        return None
    if data and all(isinstance(d, list) and len(d) == 1 for d in data):
        return [d[0] for d in data]
    return data


def _column(spec: Spec, values: list[Any], where: str) -> np.ndarray:
    """The values as the spec's dtype; the first bad one is a RequestError naming its place."""
    want = kind(spec)
    ok = _CHECKS[want]
    for i, value in enumerate(values):
        if not ok(value):
            place = where.replace("{i}", str(i))
            raise RequestError(f"{place} is {_shown(value)}; {spec.name} ({spec.dtype}) takes {_WANTS[want]}", place)
    if want == "str":
        return np.asarray(values, dtype=object)
    try:
        with np.errstate(over="raise"):  # a float32 column would otherwise turn 1e39 into inf
            return np.asarray(values, dtype=spec.dtype)
    except (OverflowError, FloatingPointError):  # a JSON number the dtype cannot hold: the client's, not a 500
        i = next(i for i, value in enumerate(values) if not _fits(value, spec.dtype))
        place = where.replace("{i}", str(i))
        low, high = _range(spec.dtype)
        raise RequestError(f"{place} is {_shown(values[i])}: out of range for {spec.name} ({spec.dtype}), which takes "
                           f"{_WANTS[want]} from {low} to {high}", place) from None


def _fits(value: Any, dtype: str) -> bool:
    try:
        with np.errstate(over="raise"):
            np.asarray([value], dtype=dtype)
    except (OverflowError, FloatingPointError):
        return False
    return True


def _range(dtype: str) -> tuple[str, str]:
    info = np.finfo(dtype) if np.dtype(dtype).kind == "f" else np.iinfo(dtype)
    return str(info.min), str(info.max)  # str: a float32 bound as float32 writes it (3.4028235e+38)


def _is_float(value: Any) -> bool:
    # bool is an int in Python, but true as a feature value is a client's mistake worth naming
    return (type(value) is float and math.isfinite(value)) or type(value) is int


_CHECKS = {"float": _is_float, "int": lambda v: type(v) is int, "bool": lambda v: type(v) is bool,
           "str": lambda v: type(v) is str}


def _shown(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} (not finite)"
    text = repr(value)
    return f"{text[:40]}... (a {type(value).__name__})" if len(text) > 40 else f"{text} (a {type(value).__name__})"


def _name_problem(where: str, given: Any, expected: Sequence[str]) -> str:
    given = [str(g) for g in given]
    missing = [n for n in expected if n not in given]
    extra = [n for n in given if n not in expected]
    parts = []
    for name in extra:
        close = difflib.get_close_matches(name, missing or expected, n=1)
        parts.append(f"unknown input {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if missing:
        parts.append(f"missing input{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")
    return f"{where}: {'; '.join(parts)}; this version takes exactly {', '.join(expected)}"


def _names(signature: Signature) -> str:
    names = [s.name for s in signature.inputs]
    return "{" + ", ".join(names[:6]) + (", ..." if len(names) > 6 else "") + "}"


# ---- outputs ---------------------------------------------------------------------------------------


def typed_outputs(signature: Signature, outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Outputs in the dtypes the signature names (scoring computes in float64)."""
    specs = {s.name: s for s in signature.outputs}
    out = {}
    for name, values in outputs.items():
        array = np.asarray(values)
        spec = specs.get(name)
        numeric = spec is not None and spec.dtype in V2_TYPES and spec.dtype not in ("str", "object")
        if numeric and array.dtype != object:
            array = array.astype(spec.dtype, copy=False)  # type: ignore[union-attr]
        out[name] = array
    return out


def output_rows(outputs: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Row-wise outputs for ``/predict``: [{"class": 1, "probs": [0.2, 0.8]}, ...]."""
    lists = {name: values.tolist() for name, values in outputs.items()}
    count = len(next(iter(lists.values()))) if lists else 0
    return [{name: column[i] for name, column in lists.items()} for i in range(count)]


def output_tensors(outputs: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """The v2 protocol's outputs: one tensor per output, data flat in row-major order."""
    return [{"name": name, "datatype": V2_TYPES.get(values.dtype.name, "BYTES"), "shape": list(values.shape),
             "data": values.ravel().tolist()} for name, values in outputs.items()]


def tensor_metadata(specs: Sequence[Spec]) -> list[dict[str, Any]]:
    """The v2 model metadata's inputs or outputs: name, datatype and shape (-1: the row count)."""
    return [{"name": s.name, "datatype": V2_TYPES.get(s.dtype, "BYTES"), "shape": [-1, *s.shape]} for s in specs]
