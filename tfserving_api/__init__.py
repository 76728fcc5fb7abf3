"""TensorFlow Serving's wire protocol without TensorFlow, shared by `service/` and `clients/`.

Needs only numpy, protobuf and grpcio. Four parts:

* ``tfserving_api._proto``: TF Serving's protos compiled into a private descriptor pool
  (same message names and wire format; regenerate with ``tools/compile_protos.py``), and
  the Open Inference Protocol's (``_proto.inference``, package ``inference``);
* `tfserving_api.open_inference`: the Open Inference Protocol's ("KServe V2") datatype
  table, BYTES serialisation and bounded raw / contents / JSON tensor decoding;
* `tfserving_api.tensors`: numpy <-> ``TensorProto`` through the one dtype table
  (`DTYPES`, `DT_NAMES`), raising `TensorError`;
* `tfserving_api.contract`: signature names, label names and metadata fields.

Typical usage::

    from tfserving_api._proto.tensorflow_serving.apis import predict_pb2
    from tfserving_api.contract import PREDICT_TEXT_SIGNATURE
    from tfserving_api.tensors import to_tensor_proto

    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "imdb", PREDICT_TEXT_SIGNATURE
    request.inputs["text"].CopyFrom(to_tensor_proto(["a wonderful film"]))
"""
