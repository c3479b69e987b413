"""The registry's record of what a version is (class, init arguments, signature): kept through its
SQLite row, shown by diff."""

from __future__ import annotations

from cl_hpc.learn.contract import Signature, Spec
from cl_hpc.registry.diff import diff_versions
from cl_hpc.registry.records import ModelVersion
from cl_hpc.registry.versions import Version


def _version(minor: int, outputs: tuple[Spec, ...], hidden: int) -> ModelVersion:
    signature = Signature((Spec("x0", "float64"),), outputs)
    return ModelVersion(name="m", version=Version(1, minor), strategy="stateless", checkpoint_path="/m.pt",
                        checkpoint_sha256="0" * 64, created=1.0, model_class="pkg.Net",
                        init_args={"hidden": hidden, "n_classes": 2}, datamodule_class="pkg.Data",
                        signature=signature.to_dict())


def test_a_version_keeps_its_class_init_args_and_signature_through_its_row() -> None:
    record = _version(0, (Spec("probs", "float32", (2,)),), 8)
    again = ModelVersion.from_row(record.to_row())
    assert again == record
    assert Signature.from_dict(again.signature).outputs == (Spec("probs", "float32", (2,)),)


def test_diff_names_a_changed_signature_and_init_argument() -> None:
    a = _version(0, (Spec("probs", "float32", (2,)),), 8)
    b = _version(1, (Spec("probs", "float32", (3,)),), 16)
    model = {change["key"]: change for change in diff_versions(a, b)["model"]}
    assert model["init_args.hidden"]["old"] == 8 and model["init_args.hidden"]["new"] == 16
    assert "signature.outputs" in model and "model_class" not in model
