"""A container image registry: the ECR API and the OCI distribution API, blobs in the object store."""
