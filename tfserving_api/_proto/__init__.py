"""TF Serving protos compiled for the client. Generated: do not edit."""
