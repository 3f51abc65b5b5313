"""RecordIO-protobuf: the bytes the SageMaker SDK writes and reads, round trips both ways."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
common = pytest.importorskip("sagemaker.amazon.common")

from opensage.images import recordio, tabular  # noqa: E402


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sdk_dense_tensors_read_and_written_identically(dtype: str) -> None:
    rng = np.random.default_rng(0)
    features = rng.random((7, 4)).astype(dtype)
    labels = rng.integers(0, 2, 7).astype(dtype)
    buffer = io.BytesIO()
    common.write_numpy_to_dense_tensor(buffer, features, labels)
    matrix, read_labels = recordio.read_matrix(buffer.getvalue())
    assert np.allclose(matrix, features) and read_labels is not None and np.array_equal(read_labels, labels)
    assert recordio.write_matrix(features, labels) == buffer.getvalue()
    records = common.read_records(io.BytesIO(recordio.write_matrix(features)))
    assert len(records) == 7 and not records[0].label


def test_sdk_sparse_tensors_are_expanded_to_their_shape() -> None:
    scipy_sparse = pytest.importorskip("scipy.sparse")
    dense = np.array([[0, 2.5, 0], [0, 0, 0], [1, 0, 3]], dtype="float32")
    buffer = io.BytesIO()
    common.write_spmatrix_to_sparse_tensor(buffer, scipy_sparse.csr_matrix(dense), np.array([1.0, 0.0, 1.0]))
    matrix, labels = recordio.read_matrix(buffer.getvalue())
    assert np.array_equal(matrix, dense) and labels is not None and labels.tolist() == [1, 0, 1]


def test_answers_are_what_the_sdk_record_deserializer_reads() -> None:
    body = recordio.write_outputs([{"score": 0.25, "predicted_label": 1}, {"projection": [1.0, -2.0]}])
    records = common.read_records(io.BytesIO(body))
    assert records[0].label["score"].float32_tensor.values[0] == 0.25
    assert records[0].label["predicted_label"].float32_tensor.values[0] == 1
    assert list(records[1].label["projection"].float32_tensor.values) == [1.0, -2.0]
    assert recordio.read_outputs(body)[1] == {"projection": [1.0, -2.0]}


def test_split_records_are_joined_and_bad_bytes_say_where() -> None:
    record = common.read_records(io.BytesIO(recordio.write_matrix(np.ones((1, 3), dtype="float32"))))[0]
    raw = record.SerializeToString()
    first, rest = raw[:5], raw[5:]
    framed = b"".join(
        recordio._HEADER.pack(recordio.MAGIC, (flag << 29) | len(part)) + part + b"\0" * (-len(part) % 4)
        for flag, part in ((1, first), (3, rest))
    )
    matrix, _ = recordio.read_matrix(framed)
    assert matrix.tolist() == [[1.0, 1.0, 1.0]]
    with pytest.raises(recordio.RecordIOError, match="magic number"):
        recordio.read_matrix(b"1,2,3\n4,5,6\n")
    with pytest.raises(recordio.RecordIOError, match="truncated"):
        recordio.read_matrix(recordio.write_matrix(np.ones((2, 3), dtype="float32"))[:-6])


def test_requests_in_every_content_type_give_the_same_rows() -> None:
    rows = np.array([[1.0, 2.0], [3.0, 4.5]], dtype="float32")
    bodies = {
        recordio.CONTENT_TYPE: recordio.write_matrix(rows),
        "text/csv": b"1,2\n3,4.5\n",
        "application/json": b'{"instances": [{"features": [1, 2]}, {"features": [3, 4.5]}]}',
        "application/jsonlines": b'{"features": [1, 2]}\n{"features": [3, 4.5]}\n',
    }
    for content_type, body in bodies.items():
        assert np.array_equal(tabular.request_matrix(body, content_type, 2), rows), content_type
    with pytest.raises(tabular.PredictError, match="the model takes 3"):
        tabular.request_matrix(b"1,2\n", "text/csv", 3)
    with pytest.raises(tabular.PredictError, match="not supported"):
        tabular.request_matrix(b"x", "image/png", 2)


def test_answers_in_each_accept_type() -> None:
    rows = [{"score": np.float32(0.75), "predicted_label": 1.0}]
    body, media = tabular.answer(rows, "application/json", ["predicted_label"])
    assert media == "application/json" and body == b'{"predictions": [{"score": 0.75, "predicted_label": 1.0}]}'
    body, media = tabular.answer(rows, "text/csv", ["predicted_label", "score"])
    assert body == b"1.0,0.75\n"
    body, media = tabular.answer(rows, recordio.CONTENT_TYPE, [])
    assert recordio.read_outputs(body) == [{"predicted_label": [1.0], "score": [0.75]}]


def test_hyperparameters_fail_in_the_containers_words() -> None:
    schema = {
        "predictor_type": tabular.Param("string", choices=("binary_classifier", "regressor"), required=True),
        "epochs": tabular.Param("integer", 15, minimum=1),
        "learning_rate": tabular.Param("number", "auto", exclusive_minimum=0, auto=True),
    }
    assert tabular.validate({"predictor_type": "regressor", "epochs": "3"}, schema, "Linear Learner") == {
        "predictor_type": "regressor",
        "epochs": 3,
        "learning_rate": "auto",
    }
    cases = {
        "'classifier' is not one of ['binary_classifier', 'regressor']": {"predictor_type": "classifier"},
        "0 is less than the minimum of 1": {"predictor_type": "regressor", "epochs": "0"},
        "'fast' is not of type 'number'": {"predictor_type": "regressor", "learning_rate": "fast"},
        "'predictor_type' is a required property": {},
        "('colour' was unexpected)": {"predictor_type": "regressor", "colour": "red"},
    }
    for message, given in cases.items():
        with pytest.raises(tabular.ClientError) as info:
            tabular.validate(given, schema, "Linear Learner")
        assert "Unable to initialize the algorithm" in str(info.value) and message in str(info.value)
