"""See the package docstring: nothing here is used by the benchmark."""


class SchemeClient:  # what OLMo-core subclasses at import time
    scheme = ()
    recoverable_errors: tuple = ()

    def __init__(self, resource: str) -> None:
        self.resource = resource


def add_scheme_client(client) -> None:
    pass


class S3Client(SchemeClient):
    scheme = ("s3",)
