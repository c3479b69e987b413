"""Requests checked against a signature (cl_hpc/serve/inputs.py), table-driven: every bad input is a
RequestError whose status is the HTTP code, whose field is the part at fault, and whose message
names that part and what is valid; good inputs become a frame of the signature's columns."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cl_hpc.errors import ClHpcError
from cl_hpc.learn.contract import Signature, Spec
from cl_hpc.serve.inputs import (
    RequestError,
    output_rows,
    output_tensors,
    rows_frame,
    tensor_metadata,
    tensors_frame,
    typed_outputs,
)

SIG = Signature(inputs=(Spec("age", "float64"), Spec("count", "int64"), Spec("member", "bool"), Spec("city", "str")),
                outputs=(Spec("class", "int64"), Spec("probs", "float32", (2,))))
NARROW = Signature(inputs=(Spec("small", "float32"), Spec("byte", "uint8"), Spec("i32", "int32")), outputs=())
MAX = 4
TAKES = "this version takes exactly age, count, member, city"


def good(**change: Any) -> dict[str, Any]:
    return {"age": 41.5, "count": 3, "member": True, "city": "Oslo", **change}


def without(key: str, **change: Any) -> dict[str, Any]:
    row = good(**change)
    del row[key]
    return row


def refused(call: Any, *args: Any) -> RequestError:
    with pytest.raises(RequestError) as caught:
        call(*args)
    assert isinstance(caught.value, ClHpcError)  # the project's hierarchy: callers catch it like the others
    return caught.value


# ---- /predict rows --------------------------------------------------------------------------------


def test_rows_become_a_frame_of_the_signature_columns_in_its_order() -> None:
    frame = rows_frame(SIG, [good(), good(age=-2, count=0, member=False, city="")], MAX)
    assert list(frame.columns) == ["age", "count", "member", "city"]
    assert [str(frame[c].dtype) for c in ("age", "count", "member")] == ["float64", "int64", "bool"]
    assert frame.to_dict("list") == {"age": [41.5, -2.0], "count": [3, 0], "member": [True, False],
                                     "city": ["Oslo", ""]}
    one = rows_frame(SIG, {"city": "Rome", "member": False, "count": 1, "age": 7}, MAX)  # a bare object, any key order
    assert len(one) == 1 and one.loc[0, "age"] == 7.0 and one.loc[0, "city"] == "Rome"
    assert len(rows_frame(SIG, [good()] * MAX, MAX)) == MAX  # exactly the limit is fine


ROW_CASES = [
    # (id, inputs, status, field, fragments of the message)
    ("string", "a,b", 422, "inputs", ["inputs must be a list of rows", "{age, count, member, city}", "got str"]),
    ("null", None, 422, "inputs", ["must be a list of rows", "got NoneType"]),
    ("number", 5, 422, "inputs", ["must be a list of rows", "got int"]),
    ("empty", [], 422, "inputs", ["inputs is empty", f"send 1 to {MAX} rows"]),
    ("oversized", [good()] * (MAX + 1), 413, "inputs",
     [f"inputs has {MAX + 1} rows", f"the most one request may carry is {MAX}", "serve.max_batch_rows", "split"]),
    ("row not an object", [good(), [1, 2, 3, 4]], 422, "inputs[1]",
     ["inputs[1] is a list", "each row is an object of {age, count, member, city}"]),
    ("missing", [without("city")], 422, "inputs[0]", ["inputs[0]", "missing input 'city'", TAKES]),
    ("two missing", [{"age": 1.0, "count": 1}], 422, "inputs[0]", ["missing inputs 'member', 'city'", TAKES]),
    ("extra", [good(zip="0150")], 422, "inputs[0]", ["unknown input 'zip'", TAKES]),
    ("misspelt", [good(), without("city", ctiy="Oslo")], 422, "inputs[1]",
     ["inputs[1]", "unknown input 'ctiy' (did you mean 'city'?)", "missing input 'city'", TAKES]),
    ("wrong case", [without("age", Age=1.0)], 422, "inputs[0]", ["unknown input 'Age' (did you mean 'age'?)"]),
    ("string for a float", [good(age="41.5")], 422, "inputs[0].age",
     ["inputs[0].age is '41.5' (a str)", "age (float64) takes a finite number"]),
    ("bool for a float", [good(), good(age=True)], 422, "inputs[1].age",
     ["inputs[1].age is True (a bool)", "age (float64) takes a finite number"]),
    ("null for a float", [good(age=None)], 422, "inputs[0].age", ["is None (a NoneType)", "takes a finite number"]),
    ("list for a float", [good(age=[1.0])], 422, "inputs[0].age", ["is [1.0] (a list)", "takes a finite number"]),
    ("NaN", [good(age=math.nan)], 422, "inputs[0].age", ["inputs[0].age is nan (not finite)", "a finite number"]),
    ("Infinity", [good(age=math.inf)], 422, "inputs[0].age", ["is inf (not finite)", "a finite number"]),
    ("-Infinity", [good(age=-math.inf)], 422, "inputs[0].age", ["is -inf (not finite)"]),
    ("float for an int", [good(count=3.0)], 422, "inputs[0].count",
     ["inputs[0].count is 3.0 (a float)", "count (int64) takes an integer"]),
    ("bool for an int", [good(count=False)], 422, "inputs[0].count", ["is False (a bool)", "takes an integer"]),
    ("string for an int", [good(count="3")], 422, "inputs[0].count", ["is '3' (a str)", "takes an integer"]),
    ("int for a bool", [good(member=1)], 422, "inputs[0].member",
     ["inputs[0].member is 1 (a int)", "member (bool) takes true or false"]),
    ("string for a bool", [good(member="true")], 422, "inputs[0].member", ["is 'true' (a str)", "true or false"]),
    ("number for a string", [good(city=47)], 422, "inputs[0].city", ["is 47 (a int)", "city (str) takes a string"]),
    ("a long value is cut short", [good(city=["x" * 100])], 422, "inputs[0].city", ["... (a list)"]),
]


@pytest.mark.parametrize("inputs, status, field, fragments", [c[1:] for c in ROW_CASES], ids=[c[0] for c in ROW_CASES])
def test_every_bad_row_input_is_refused_naming_the_field_and_what_is_valid(inputs: Any, status: int, field: str,
                                                                          fragments: list[str]) -> None:
    error = refused(rows_frame, SIG, inputs, MAX)
    assert (error.status, error.field) == (status, field), str(error)
    for fragment in fragments:
        assert fragment in str(error), (fragment, str(error))


def test_a_long_value_is_shown_cut_at_forty_characters() -> None:
    error = refused(rows_frame, SIG, [good(city=["x" * 100])], MAX)
    shown = str(error).split(" is ", 1)[1].split("... (a list)")[0]
    assert len(shown) == 40


OUT_OF_RANGE = [
    # (id, row, field, fragments): a value of the right JSON type that the column's dtype cannot hold
    ("int beyond int64", {"age": 1.0, "count": 2 ** 70, "member": True, "city": "x"}, SIG, "inputs[0].count",
     [f"inputs[0].count is {2 ** 70}", "out of range", "count (int64)", "-9223372036854775808 to 9223372036854775807"]),
    ("int beyond float64", {"age": 10 ** 400, "count": 1, "member": True, "city": "x"}, SIG, "inputs[0].age",
     ["inputs[0].age is 1000", "out of range", "age (float64)"]),
    ("negative uint8", {"small": 1.0, "byte": -1, "i32": 0}, NARROW, "inputs[0].byte",
     ["inputs[0].byte is -1", "out of range", "byte (uint8)", "0 to 255"]),
    ("past uint8", {"small": 1.0, "byte": 256, "i32": 0}, NARROW, "inputs[0].byte", ["is 256", "0 to 255"]),
    ("past int32", {"small": 1.0, "byte": 1, "i32": 2 ** 31}, NARROW, "inputs[0].i32", ["is 2147483648", "int32"]),
    ("past float32", {"small": 1e39, "byte": 1, "i32": 0}, NARROW, "inputs[0].small",
     ["inputs[0].small is 1e+39", "out of range", "small (float32)"]),
]


@pytest.mark.parametrize("row, signature, field, fragments", [c[1:] for c in OUT_OF_RANGE],
                         ids=[c[0] for c in OUT_OF_RANGE])
def test_a_number_the_column_cannot_hold_is_a_422_not_a_crash(row: dict[str, Any], signature: Signature, field: str,
                                                              fragments: list[str]) -> None:
    error = refused(rows_frame, signature, [row], MAX)
    assert (error.status, error.field) == (422, field), str(error)
    for fragment in fragments:
        assert fragment in str(error), (fragment, str(error))


# A signature of one numeric dtype (the tabular model's) is read as one block: the same checks hold.
FLOATS = Signature(inputs=(Spec("a", "float64"), Spec("b", "float64"), Spec("c", "float64")), outputs=())
FLOAT32 = Signature(inputs=(Spec("x", "float32"), Spec("y", "float32")), outputs=())
INTS = Signature(inputs=(Spec("i", "int32"), Spec("j", "int32")), outputs=())
ONE_DTYPE = [
    ("string", FLOATS, [{"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 1.0, "b": "2", "c": 3.0}], "inputs[1].b",
     ["inputs[1].b is '2' (a str)", "b (float64) takes a finite number"]),
    ("bool", FLOATS, [{"a": True, "b": 2.0, "c": 3.0}], "inputs[0].a", ["is True (a bool)"]),
    ("NaN", FLOATS, [{"a": 1.0, "b": 2.0, "c": math.nan}], "inputs[0].c", ["nan (not finite)"]),
    ("beyond float64", FLOATS, [{"a": 1.0, "b": 10 ** 400, "c": 3.0}], "inputs[0].b", ["out of range", "b (float64)"]),
    ("beyond float32", FLOAT32, [{"x": 1.0, "y": 2.0}, {"x": -1e39, "y": 2.0}], "inputs[1].x",
     ["inputs[1].x is -1e+39 (a float): out of range for x (float32)", "-3.4028235e+38 to 3.4028235e+38"]),
    ("float for an int", INTS, [{"i": 1, "j": 2.0}], "inputs[0].j", ["is 2.0 (a float)", "j (int32) takes an integer"]),
    ("beyond int32", INTS, [{"i": 1, "j": 2}, {"i": 1, "j": -2 ** 40}], "inputs[1].j",
     [f"inputs[1].j is {-2 ** 40} (a int): out of range", "-2147483648 to 2147483647"]),
]


@pytest.mark.parametrize("signature, inputs, field, fragments", [c[1:] for c in ONE_DTYPE],
                         ids=[c[0] for c in ONE_DTYPE])
def test_a_signature_of_one_dtype_refuses_the_same_inputs(signature: Signature, inputs: Any, field: str,
                                                          fragments: list[str]) -> None:
    error = refused(rows_frame, signature, inputs, MAX)
    assert (error.status, error.field) == (422, field), str(error)
    for fragment in fragments:
        assert fragment in str(error), (fragment, str(error))


def test_a_signature_of_one_dtype_gives_the_same_frame() -> None:
    frame = rows_frame(FLOATS, [{"c": 3, "a": 1.5, "b": -2.0}, {"a": 0.0, "b": 1e300, "c": -0.5}], MAX)
    assert list(frame.columns) == ["a", "b", "c"] and all(frame[c].dtype == np.float64 for c in "abc")
    assert frame.to_dict("list") == {"a": [1.5, 0.0], "b": [-2.0, 1e300], "c": [3.0, -0.5]}
    ints = rows_frame(INTS, {"i": -2 ** 31, "j": 2 ** 31 - 1}, MAX)
    assert ints.dtypes.tolist() == [np.int32, np.int32] and ints.iloc[0].tolist() == [-2 ** 31, 2 ** 31 - 1]


def test_the_narrow_dtypes_take_their_whole_range() -> None:
    frame = rows_frame(NARROW, [{"small": 3.0e38, "byte": 255, "i32": -2 ** 31}, {"small": -1, "byte": 0, "i32": 7}],
                       MAX)
    assert [str(frame[c].dtype) for c in frame.columns] == ["float32", "uint8", "int32"]
    assert frame["byte"].tolist() == [255, 0] and frame["i32"].tolist() == [-2 ** 31, 7]


# ---- Open Inference Protocol v2 tensors -----------------------------------------------------------


def tensor(name: str, data: Any, datatype: str = "", shape: Any = None) -> dict[str, Any]:
    types = {"age": "FP64", "count": "INT64", "member": "BOOL", "city": "BYTES"}
    rows = len(data) if isinstance(data, list) else 1
    return {"name": name, "datatype": datatype or types.get(name, "BYTES"), "shape": [rows] if shape is None else shape,
            "data": data}


def tensors(**change: dict[str, Any]) -> list[dict[str, Any]]:
    base = {"age": tensor("age", [41.5, -2.0]), "count": tensor("count", [3, 0]),
            "member": tensor("member", [True, False]), "city": tensor("city", ["Oslo", ""])}
    return list({**base, **change}.values())


def test_tensors_become_the_same_frame_as_rows() -> None:
    expected = rows_frame(SIG, [good(), good(age=-2, count=0, member=False, city="")], MAX)
    pd.testing.assert_frame_equal(tensors_frame(SIG, tensors(), MAX), expected)
    reordered = list(reversed(tensors()))  # tensors in any order; the frame is in the signature's
    pd.testing.assert_frame_equal(tensors_frame(SIG, reordered, MAX), expected)
    nested = tensors(age=tensor("age", [[41.5], [-2.0]], shape=[2, 1]), count=tensor("count", [3, 0], "int32"))
    pd.testing.assert_frame_equal(tensors_frame(SIG, nested, MAX), expected)  # [rows, 1], nested data, INT32
    lower = tensors(age=tensor("age", [41, -2], "int64"), member=tensor("member", [True, False], "bool"))
    frame = tensors_frame(SIG, lower, MAX)  # the datatype in any case; integers for a float column
    assert frame["age"].dtype == np.float64 and frame["age"].tolist() == [41.0, -2.0]
    assert frame["member"].tolist() == [True, False]


def _fields(**fields: Any) -> list[dict[str, Any]]:
    """The four tensors with fields of one replaced: _fields(age={"shape": [2, 2]})."""
    return tensors(**{name: {**tensor(name, [41.5, -2.0] if name == "age" else [3, 0] if name == "count" else
                                      [True, False] if name == "member" else ["a", "b"]), **change}
                         for name, change in fields.items()})


TENSOR_CASES = [
    ("an object", {"name": "age", "data": [1.0]}, 422, "inputs", ["inputs must be a list of tensors",
                                                                 "{name, shape, datatype, data}"]),
    ("a list of numbers", [1.0, 2.0], 422, "inputs", ["must be a list of tensors"]),
    ("null", None, 422, "inputs", ["must be a list of tensors"]),
    ("no tensors", [], 422, "inputs", ["missing inputs 'age', 'count', 'member', 'city'", TAKES]),
    ("missing", tensors()[:3], 422, "inputs", ["missing input 'city'", TAKES]),
    ("extra", [*tensors(), tensor("zip", ["0150"])], 422, "inputs", ["unknown input 'zip'", TAKES]),
    ("misspelt", [*tensors()[:3], {**tensor("city", ["a", "b"]), "name": "citty"}], 422, "inputs",
     ["unknown input 'citty' (did you mean 'city'?)", "missing input 'city'"]),
    ("unnamed", [*tensors()[:3], {k: v for k, v in tensor("city", ["a", "b"]).items() if k != "name"}], 422,
     "inputs", ["missing input 'city'"]),
    ("duplicate", [*tensors(), tensor("age", [1.0, 2.0])], 422, "inputs",
     ["tensor 'age' twice", "one tensor per input", "age, count, member, city"]),
    ("datatype for a float", _fields(age={"datatype": "BYTES"}), 422, "inputs[age].datatype",
     ["inputs[age].datatype is 'BYTES'", "age (float64) takes", "FP64", "INT64"]),
    ("datatype for an int", _fields(count={"datatype": "FP64"}), 422, "inputs[count].datatype",
     ["is 'FP64'", "count (int64) takes", "INT64"]),
    ("datatype for a bool", _fields(member={"datatype": "INT8"}), 422, "inputs[member].datatype", ["takes BOOL"]),
    ("datatype for a string", _fields(city={"datatype": "FP32"}), 422, "inputs[city].datatype", ["takes BYTES"]),
    ("no datatype", _fields(age={"datatype": None}), 422, "inputs[age].datatype", ["datatype is None"]),
    ("unknown datatype", _fields(age={"datatype": "FLOAT"}), 422, "inputs[age].datatype", ["is 'FLOAT'", "FP64"]),
    ("shape of a matrix", _fields(age={"shape": [1, 2]}), 422, "inputs[age].shape",
     ["inputs[age].shape is [1, 2]", "one value per row: [rows] or [rows, 1]"]),
    ("no shape", _fields(age={"shape": None}), 422, "inputs[age].shape", ["shape is None"]),
    ("empty shape", _fields(age={"shape": []}), 422, "inputs[age].shape", ["shape is []"]),
    ("negative shape", _fields(age={"shape": [-1]}), 422, "inputs[age].shape", ["shape is [-1]"]),
    ("shape as text", _fields(age={"shape": "2"}), 422, "inputs[age].shape", ["shape is '2'"]),
    ("fewer values than the shape", _fields(age={"shape": [3]}), 422, "inputs[age].data",
     ["inputs[age].data has 2 values but shape [3] says 3"]),
    ("more values than the shape", _fields(count={"shape": [1]}), 422, "inputs[count].data",
     ["has 2 values but shape [1] says 1"]),
    ("data not a list", _fields(age={"data": 41.5, "shape": [1]}), 422, "inputs[age].data",
     ["inputs[age].data has no list"]),
    ("different row counts", _fields(age={"data": [1.0], "shape": [1]}), 422, "inputs",
     ["different row counts", "'age': 1", "'count': 2", "one value per row"]),
    ("empty", [tensor(n, [], shape=[0]) for n in ("age", "count", "member", "city")], 422, "inputs[age].shape[0]",
     ["inputs[age].shape[0] is empty", f"send 1 to {MAX} rows"]),
    ("oversized", _fields(age={"data": [1.0] * (MAX + 1), "shape": [MAX + 1]}), 413, "inputs[age].shape[0]",
     [f"has {MAX + 1} rows", f"is {MAX} (serve.max_batch_rows)"]),
    ("string in FP64 data", _fields(age={"data": [1.0, "2"]}), 422, "inputs[age].data[1]",
     ["inputs[age].data[1] is '2' (a str)", "age (float64) takes a finite number"]),
    ("NaN in FP64 data", _fields(age={"data": [math.nan, 1.0]}), 422, "inputs[age].data[0]", ["nan (not finite)"]),
    ("float in INT64 data", _fields(count={"data": [1, 2.5]}), 422, "inputs[count].data[1]",
     ["is 2.5 (a float)", "takes an integer"]),
    ("number in BOOL data", _fields(member={"data": [0, 1]}), 422, "inputs[member].data[0]", ["takes true or false"]),
]


@pytest.mark.parametrize("inputs, status, field, fragments", [c[1:] for c in TENSOR_CASES],
                         ids=[c[0] for c in TENSOR_CASES])
def test_every_bad_v2_tensor_is_refused_naming_the_field_and_what_is_valid(inputs: Any, status: int, field: str,
                                                                          fragments: list[str]) -> None:
    error = refused(tensors_frame, SIG, inputs, MAX)
    assert (error.status, error.field) == (status, field), str(error)
    for fragment in fragments:
        assert fragment in str(error), (fragment, str(error))


# ---- outputs ----------------------------------------------------------------------------------------


def test_outputs_take_the_signature_dtypes_and_both_wire_shapes() -> None:
    raw = {"class": np.array([1.0, 0.0]), "probs": np.array([[0.25, 0.75], [0.5, 0.5]]),
           "label": np.array(["yes", "no"])}  # computed in float64; "label" is not in the signature
    out = typed_outputs(SIG, raw)
    assert {k: str(v.dtype) for k, v in out.items()} == {"class": "int64", "probs": "float32", "label": "<U3"}
    assert output_rows(out) == [{"class": 1, "probs": [0.25, 0.75], "label": "yes"},
                                {"class": 0, "probs": [0.5, 0.5], "label": "no"}]
    assert output_tensors(out) == [
        {"name": "class", "datatype": "INT64", "shape": [2], "data": [1, 0]},
        {"name": "probs", "datatype": "FP32", "shape": [2, 2], "data": [0.25, 0.75, 0.5, 0.5]},
        {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["yes", "no"]}]
    assert output_rows({}) == []


def test_model_metadata_names_each_tensor_with_a_free_row_count() -> None:
    assert tensor_metadata(SIG.inputs) == [{"name": "age", "datatype": "FP64", "shape": [-1]},
                                           {"name": "count", "datatype": "INT64", "shape": [-1]},
                                           {"name": "member", "datatype": "BOOL", "shape": [-1]},
                                           {"name": "city", "datatype": "BYTES", "shape": [-1]}]
    assert tensor_metadata(SIG.outputs)[1] == {"name": "probs", "datatype": "FP32", "shape": [-1, 2]}
