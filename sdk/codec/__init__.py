"""The request codec: content codings, header parameters, multipart, data URIs and JSON."""
