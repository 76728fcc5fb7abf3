"""TF Serving protos compiled without TensorFlow. Generated: do not edit."""
