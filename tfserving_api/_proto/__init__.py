"""TF Serving and Open Inference Protocol protos compiled without TensorFlow. Generated: do not edit."""
