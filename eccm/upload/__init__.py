"""Uploads: planning and S3 keys (pure), the S3 client, the uploader thread."""
